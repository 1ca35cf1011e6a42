"""Query sources of published extraction attacks on language APIs, built from a pool.

Real extraction is not only "chat instructions drawn from a public dataset". The attacks
the literature measured use other query sources, and a detector tuned on one kind of text
must not depend on it:

- **RANDOM** (Krishna et al. 2020, "Thieves on Sesame Street"): sequences of words drawn
  from a vocabulary (here: the words of the split's own prompts, by frequency).
- **WIKI** (same paper): natural sentences sampled from a public text corpus (here:
  declarative sentences cut out of the split's prompts, so no new data is needed).
- **MeaeQ** (Xu et al. 2023): task-relevant queries from a public pool, chosen for
  diversity (here: one task's prompts, ordered by greedy farthest-point selection in
  embedding space, so each query lands far from those already asked).

:func:`with_strategies` appends the RANDOM and WIKI texts to a pool as categories of kind
``"strategy"``, which no benign planner draws. Their *provided* vectors are approximations
(we have MiniLM vectors of the pool's prompts only): a WIKI sentence takes its prompt's
vector, a RANDOM sequence the normalised mean of the vectors of the prompts its words came
from. The text mode embeds the real texts, which is what the independent evaluation uses.
"""
from __future__ import annotations

import re
import numpy as np

from pipeline.simulate.pool import Pool

STRATEGY_KIND = "strategy"
RANDOM_CAT, WIKI_CAT = "strategy/random_words", "strategy/wiki_sentences"
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{1,15}")
_SENTENCE = re.compile(r"(?<=[.!])\s+")


_CACHE: dict = {}


def with_strategies(pool: Pool, rows: int = 6000, seed: int = 7) -> Pool:
    """``pool`` plus ``rows`` RANDOM and up to ``rows`` WIKI texts (deterministic; cached
    per pool object, as pools are)."""
    key = (id(pool), rows, seed)
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not pool:
        hit = _CACHE[key] = (pool, _extend(pool, rows, seed))
    return hit[1]


def _extend(pool: Pool, rows: int, seed: int) -> Pool:
    rng = np.random.default_rng([seed, len(pool)])
    texts, vecs, cats = [], [], []
    src_texts = pool.texts
    emb = np.asarray(pool.embeddings, dtype=np.float32)
    # RANDOM: 6-30 words, each from one of 4 random prompts (vocabulary by frequency)
    for _ in range(rows):
        parents = rng.integers(0, len(pool), 4)
        words = [w for p in parents for w in _WORD.findall(src_texts[p])]
        if len(words) < 6:
            continue
        k = int(rng.integers(6, 31))
        pick = rng.choice(len(words), size=min(k, len(words)), replace=k > len(words))
        texts.append(" ".join(words[i] for i in pick))
        v = emb[parents].mean(axis=0) + 0.3 * rng.standard_normal(emb.shape[1]) / np.sqrt(
            emb.shape[1])
        vecs.append(v / max(np.linalg.norm(v), 1e-6))
        cats.append(RANDOM_CAT)
    # WIKI: sentences of 8-40 words that state something (no question, no instruction list)
    order = rng.permutation(len(pool))
    got = 0
    for p in order:
        if got >= rows:
            break
        for sent in _SENTENCE.split(src_texts[p]):
            n_words = len(sent.split())
            if 8 <= n_words <= 40 and sent[:1].isupper() and sent.rstrip()[-1:] == "." \
                    and "\n" not in sent and ":" not in sent:
                texts.append(sent.strip())
                vecs.append(emb[p])
                cats.append(WIKI_CAT)
                got += 1
                break
    if not texts:
        return pool
    new_vecs = np.asarray(vecs, dtype=pool.embeddings.dtype)
    out = Pool(split=pool.split, texts=list(pool.texts) + texts,
               embeddings=np.concatenate([pool.embeddings, new_vecs]),
               sources=np.concatenate([pool.sources, np.array([f"strategy_{pool.split}"] * len(texts))]),
               categories=np.concatenate([pool.categories, np.array(cats)]),
               stand_in=pool.stand_in)
    out.cat_kind = [STRATEGY_KIND if n.startswith("strategy/") else k
                    for n, k in zip(out.cat_names, out.cat_kind)]
    return out


def farthest_first(vectors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` rows of ``vectors`` in greedy farthest-point order (MeaeQ-style
    diversity: each pick is the row least similar to everything picked so far)."""
    v = np.asarray(vectors, dtype=np.float32)
    n = min(n, len(v))
    first = int(rng.integers(len(v)))
    picked = [first]
    best = v @ v[first]                   # highest cosine to anything picked
    best[first] = np.inf
    for _ in range(n - 1):
        j = int(np.argmin(best))
        picked.append(j)
        np.maximum(best, v @ v[j], out=best)
        best[j] = np.inf
    return np.asarray(picked, dtype=np.int64)
