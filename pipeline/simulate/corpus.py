"""Read the shared corpus of real prompts (text, source, topic label, MiniLM embedding).

The corpus lives outside the project (``../shared/data/prompts`` next to the checkout, or
``$COVERWATCH_CORPUS``) and is never copied into it. Callers that can run without it check
:func:`corpus_available` and fall back to the package's small licensed sample
(:func:`load_sample`, ``pipeline/data/prompts_sample.jsonl.gz``; no MiniLM vectors, so its
rows carry the hashing embedder's), and to synthetic stand-in traffic when even that is gone.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import orjson

REPO_ROOT = Path(__file__).resolve().parents[2]


def corpus_dir() -> Path:
    env = os.environ.get("COVERWATCH_CORPUS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "prompts"


def corpus_available() -> bool:
    return any(corpus_dir().glob("*.jsonl.gz"))


def sample_path() -> Path:
    """The shipped prompt sample; ``$COVERWATCH_PROMPT_SAMPLE`` points elsewhere (tests)."""
    env = os.environ.get("COVERWATCH_PROMPT_SAMPLE")
    return Path(env) if env else REPO_ROOT / "pipeline" / "data" / "prompts_sample.jsonl.gz"


def sample_available() -> bool:
    return sample_path().is_file()


@lru_cache(maxsize=2)
def load_sample(path: str | None = None) -> Corpus:
    """The shipped sample as a :class:`Corpus`, embedded by the default hashing embedder."""
    from pipeline.embed.hashing import HashingEmbedder
    with gzip.open(path or sample_path(), "rb") as fh:
        rows = [orjson.loads(line) for line in fh if line.strip()]
    texts = [r["text"] for r in rows]
    emb = HashingEmbedder(dim=384).embed(texts).astype(np.float16)
    return Corpus(texts, np.asarray([r["source"] for r in rows]),
                  np.asarray([f"{r['source']}/{r.get('category') or ''}" for r in rows]), emb)


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    sources: np.ndarray      # str per row
    categories: np.ndarray   # str per row ("" where the source has none)
    embeddings: np.ndarray   # float16 [rows, 384], L2-normalised (all-MiniLM-L6-v2)

    def __len__(self) -> int:
        return len(self.texts)


@lru_cache(maxsize=4)
def load_corpus(sources: tuple[str, ...] | None = None) -> Corpus:
    """Load every source (or the named ones), rows aligned with their embeddings."""
    root = corpus_dir()
    files = sorted(root.glob("*.jsonl.gz"))
    if not files:
        raise FileNotFoundError(f"no corpus at {root} (set COVERWATCH_CORPUS)")
    texts, srcs, cats, embs = [], [], [], []
    for f in files:
        name = f.name[: -len(".jsonl.gz")]
        if sources is not None and name not in sources:
            continue
        with gzip.open(f, "rb") as fh:
            rows = [orjson.loads(line) for line in fh if line.strip()]
        emb = np.load(root / f"{name}.minilm.f16.npy")
        if len(emb) != len(rows):
            raise ValueError(f"{name}: {len(rows)} rows but {len(emb)} embeddings")
        texts += [r["text"] for r in rows]
        srcs += [name] * len(rows)
        cats += [f"{name}/{r.get('category') or ''}" for r in rows]
        embs.append(emb)
    return Corpus(texts, np.asarray(srcs), np.asarray(cats), np.concatenate(embs))
