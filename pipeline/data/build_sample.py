"""Regenerate ``prompts_sample.jsonl.gz`` from the shared corpus (deterministic).

The package ships a few thousand real prompts so that a bare clone (no ``../shared`` next
to it) runs the demo and the stand-in benchmarks on real text rather than on synthetic
pseudo-words. Only sources whose licence allows redistribution with attribution are drawn
(MIT, Apache-2.0, CC0-1.0, CC-BY-4.0; see ``NOTICE``): no BIG-bench (canary), no MBPP (mixed
CC-BY-NC), no T0/P3 (underlying datasets' own licences), no red-team sources.

Rows are picked per (source, category) by the SHA-256 of their text, so the sample depends
on the corpus files only (no random generator, no library version).

    python -m pipeline.data.build_sample [--corpus ../shared/data/prompts]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import orjson

OUT = Path(__file__).with_name("prompts_sample.jsonl.gz")
MAX_CHARS = 2000   # a few role prompts run to 20k characters; they would be half the file
# source -> (rows per category, cap on categories taken; None = all). Calib sources first.
QUOTAS: dict[str, tuple[int, int | None]] = {
    "gpteacher": (200, None),
    "humaneval": (164, None),
    "awesome_chatgpt_prompts_zh": (60, None),
    "self_instruct_seed": (150, None),
    "vicuna_bench": (10, None),
    "mmlu": (16, None),
    "gsm8k": (300, None),
    "anthropic_model_written_evals": (16, 12),
    "awesome_chatgpt_prompts": (100, None),
    "mt_bench": (10, None),
    "ifeval": (25, None),
    "self_instruct_user_oriented": (10, None),
}


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def sample_rows(corpus: Path) -> list[dict]:
    """The sample: for every source in QUOTAS, up to the quota per category, in file order."""
    out: list[dict] = []
    for source, (per_cat, max_cats) in QUOTAS.items():
        with gzip.open(corpus / f"{source}.jsonl.gz", "rb") as fh:
            rows = [orjson.loads(line) for line in fh if line.strip()]
        by_cat: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            if len(r["text"]) > MAX_CHARS:
                continue
            by_cat.setdefault(r.get("category") or "", []).append(i)
        cats = sorted(by_cat, key=lambda c: (-len(by_cat[c]), c))[:max_cats]
        keep: set[int] = set()
        for c in cats:
            keep.update(sorted(by_cat[c], key=lambda i: _key(rows[i]["text"]))[:per_cat])
        out += [{"text": rows[i]["text"], "source": source,
                 "category": rows[i].get("category")} for i in sorted(keep)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None,
                    help="corpus directory (default: $COVERWATCH_CORPUS or ../shared/data/prompts)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from pipeline.simulate.corpus import corpus_dir
    rows = sample_rows(args.corpus or corpus_dir())
    body = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    # mtime=0 and no file name in the header: the same rows give the same bytes.
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                     filename="", compresslevel=9) as fh:
        fh.write(body)
    print(f"{len(rows):,} prompts -> {args.out} ({args.out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
