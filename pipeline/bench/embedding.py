"""``coverwatch bench embed``: speed and MiniLM-agreement of the text embedders.

For each embedder it embeds the whole shared prompt corpus with the batch API, pinned to one
core, and reports

- prompts/s: corpus rows / CPU seconds of the embedding calls (one core);
- recall@10: for ``--sample`` query rows, the share of each query's 10 nearest corpus
  neighbours under all-MiniLM-L6-v2 (the corpus ships its vectors) that are also among its
  10 nearest under the embedder (cosine, whole corpus, the query itself excluded).

The plain hashed bag-of-words baseline is there so the recall number means something.
Corpus: ../shared/data/prompts (licences and attribution in its README.md).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import orjson

from pipeline.embed import get_embedder
from pipeline.simulate.corpus import corpus_available, corpus_dir, load_corpus

K = 10
_TOKEN = re.compile(r"\w+")


class BagOfWordsEmbedder:
    """Baseline: lowercase ``\\w+`` tokens, crc32-hashed (signed) into ``dim``, raw counts, L2.

    >>> v = BagOfWordsEmbedder(dim=16).embed(["a b a", ""])
    >>> v.shape, round(float(v[0] @ v[0]), 5), float(v[1] @ v[1])
    ((2, 16), 1.0, 0.0)
    """

    def __init__(self, dim: int = 384, seed: int = 0):
        self.dim = dim
        self.seed = seed

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        salt = self.seed & 0xFFFFFFFF
        for i, t in enumerate(texts):
            row = out[i]
            for tok in _TOKEN.findall(t.lower()):
                h = zlib.crc32(tok.encode("utf-8", "surrogatepass"), salt)
                row[h % self.dim] += 1.0 if h & 0x80000000 else -1.0
        nrm = np.linalg.norm(out, axis=1)
        nrm[nrm == 0] = 1.0
        return out / nrm[:, None]

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def embedders(dim: int) -> dict:
    return {"hashing": get_embedder("hashing", dim=dim), "bow-baseline": BagOfWordsEmbedder(dim)}


def topk_neighbours(emb: np.ndarray, queries: np.ndarray, k: int = K,
                    chunk: int = 256) -> np.ndarray:
    """Indices [len(queries), k] of each query row's k nearest rows (cosine), self excluded.

    Rows must be L2-normalised.
    """
    emb = np.ascontiguousarray(emb, np.float32)
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), chunk):
        q = queries[s:s + chunk]
        sims = emb[q] @ emb.T
        sims[np.arange(len(q)), q] = -np.inf
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        out[s:s + len(q)] = part
    return out


def recall_at_k(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over queries of |ref ∩ cand| / k for two [n, k] neighbour index arrays."""
    k = reference.shape[1]
    hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(reference, candidate)]
    return float(np.mean(hits)) / k if hits else 0.0


class _Progress:
    """Messages on stderr, but only once the run has taken more than ``after`` seconds."""

    def __init__(self, after: float = 10.0):
        self.t0 = time.monotonic()
        self.after = after
        self.last = 0.0

    def __call__(self, msg: str, force: bool = False) -> None:
        now = time.monotonic() - self.t0
        if now > self.after and (force or now - self.last > 5.0):
            self.last = now
            print(f"[embed {now:5.0f}s] {msg}", file=sys.stderr, flush=True)


def measure(embedder, texts: list[str], batch: int, progress) -> tuple[np.ndarray, float]:
    """Embed ``texts`` in batches; returns (vectors, CPU seconds spent in ``embed``)."""
    parts, cpu = [], 0.0
    for s in range(0, len(texts), batch):
        t = time.thread_time()
        parts.append(embedder.embed(texts[s:s + batch]))
        cpu += time.thread_time() - t
        progress(f"{type(embedder).__name__}: {s + batch:,}/{len(texts):,} prompts")
    return np.concatenate(parts), cpu


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample", type=int, default=2000, metavar="N",
                        help="query rows for recall@10 (default 2000)")
    parser.add_argument("--out", default="bench/results/embed.json", help="JSON results file")
    parser.add_argument("--dim", type=int, default=384, help="embedding dimension")
    parser.add_argument("--batch", type=int, default=1024, help="prompts per embed() call")
    parser.add_argument("--seed", type=int, default=0, help="seed of the query sample")


def _pin_one_core():
    """Pin this process to one CPU for the timing; returns the previous affinity."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    return before


def run(args: argparse.Namespace) -> int:
    if not corpus_available():
        print(f"error: the prompt corpus is absent (looked in {corpus_dir()}); "
              "set COVERWATCH_CORPUS or place it at ../shared/data/prompts", file=sys.stderr)
        return 2
    progress = _Progress()
    corpus = load_corpus()
    n = len(corpus)
    sample = min(args.sample, n)
    queries = np.random.default_rng(args.seed).choice(n, sample, replace=False)
    progress("MiniLM reference neighbours", force=True)
    ref = topk_neighbours(corpus.embeddings.astype(np.float32), queries)

    results = {}
    for name, emb in embedders(args.dim).items():
        before = _pin_one_core()
        try:
            vecs, cpu = measure(emb, corpus.texts, args.batch, progress)
        finally:
            if before is not None:
                os.sched_setaffinity(0, before)
        progress(f"{name}: neighbours", force=True)
        rec = recall_at_k(ref, topk_neighbours(vecs, queries))
        results[name] = {"prompts_per_s": round(n / cpu), "recall_at_10": round(rec, 4),
                         "dim": int(vecs.shape[1])}

    print(f"{'embedder':<14} {'dim':>5} {'prompts/s (1 core)':>19} {'recall@10 vs MiniLM':>20}")
    for name, r in results.items():
        print(f"{name:<14} {r['dim']:>5} {r['prompts_per_s']:>19,} {r['recall_at_10']:>20.3f}")
    print(f"({n:,} corpus rows, {sample:,} queries; corpus licences: {corpus_dir()}/README.md)")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps({
        "embedders": results, "corpus_rows": n, "sample": sample,
        "reference": "all-MiniLM-L6-v2 (corpus-provided vectors)", "k": K,
        "batch": args.batch, "timing": "CPU time of embed() calls, process pinned to one core",
    }, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    sys.exit(run(p.parse_args()))
