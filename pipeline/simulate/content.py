"""What tenants ask: row draws from a :class:`~pipeline.simulate.pool.Pool`.

Benign use re-asks: an app has a working set of popular questions (Zipf repeats) that grows
slowly. Extraction wants *new* answers: a sweep draws prompts without replacement across
many topics. Templates wrap prompts the way capability-targeted distillers elicit chain of
thought; a templated prompt's provided vector is approximated by :func:`templated_vectors`
(we have MiniLM vectors of the raw texts only), while the text mode embeds the real text.
"""
from __future__ import annotations

import numpy as np

TEMPLATES = (
    "Solve step by step: {x}",
    "Think step by step and explain your reasoning.\n\n{x}",
    "{x}\nLet's think step by step. Show every intermediate result, then give the final "
    "answer after 'Answer:'.",
    "Reason carefully about the following task before answering. Write out your full chain "
    "of thought.\n\n{x}",
    "Write a complete, well-commented solution and explain your reasoning step by step.\n\n{x}",
    "{x}\n\nThink step by step: first describe the algorithm, then write the code, then walk "
    "through a test case.",
    "Answer the following question. Think step by step and explain why each option is right "
    "or wrong.\n\n{x}",
)
CAPABILITY_TEMPLATES = {"math": (0, 1, 2), "reasoning": (1, 3, 2), "code": (4, 5),
                        "exam": (6, 1), "chat": (1, 3), "nlp": (3, 1)}
# How far a template pulls a prompt's vector toward a shared direction (cos to raw ~0.91).
TEMPLATE_PULL = 0.45


def render_text(text: str, template: int) -> str:
    return text if template < 0 else TEMPLATES[template].format(x=text)


def template_direction(template: int, dim: int) -> np.ndarray:
    v = np.random.default_rng(10_007 + template).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def templated_vectors(vectors: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Approximate provided vectors of templated prompts: raw vector pulled toward the
    template's fixed direction, renormalised. Rows with template -1 are returned as is."""
    out = np.asarray(vectors, dtype=np.float32).copy()
    for t in np.unique(templates[templates >= 0]):
        m = templates == t
        out[m] += TEMPLATE_PULL * template_direction(int(t), out.shape[1])
        out[m] /= np.linalg.norm(out[m], axis=1, keepdims=True)
    return out


def zipf_ranks(rng: np.random.Generator, size: np.ndarray, a: float) -> np.ndarray:
    """Ranks in ``[0, size)`` with P(rank k) ~ (k+1)^-a (continuous inverse CDF)."""
    size = np.asarray(size, dtype=float)
    u = rng.random(size.shape)
    top = (size + 1.0) ** (1.0 - a)
    x = (1.0 + u * (top - 1.0)) ** (1.0 / (1.0 - a))
    return np.minimum(np.floor(x).astype(np.int64) - 1, size.astype(np.int64) - 1).clip(0)


def working_set(rng: np.random.Generator, pool, cats: list[int], n: int, *,
                p_new: float = 0.12, initial: int = 150, a: float = 1.15) -> np.ndarray:
    """An app's traffic: Zipf repeats over a working set that grows by ``p_new`` a query."""
    candidates = rng.permutation(np.concatenate([pool.cat_rows[c] for c in cats]))
    is_new = rng.random(n) < p_new
    size = np.minimum(min(initial, len(candidates)) + np.cumsum(is_new), len(candidates))
    rank = np.where(is_new, size - 1, zipf_ranks(rng, size, a))
    return candidates[rank]


def broad_mix(rng: np.random.Generator, pool, cats: list[int], weights: np.ndarray, n: int,
              *, p_repeat: float = 0.15, a: float = 1.1) -> np.ndarray:
    """General chat: many topics by ``weights``, mostly new questions, some re-asked."""
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    chosen = rng.choice(len(cats), size=n, p=w)
    rows = np.empty(n, dtype=np.int64)
    for j, c in enumerate(cats):
        m = chosen == j
        rows[m] = rng.choice(pool.cat_rows[c], size=int(m.sum()))
    repeat = np.flatnonzero(rng.random(n) < p_repeat)
    repeat = repeat[repeat > 0]
    back = zipf_ranks(rng, repeat, a)        # re-ask something recent-ish of its own
    rows[repeat] = rows[np.maximum(repeat - 1 - back, 0)]
    return rows


def sqrt_weights(pool, cats: list[int], adversarial: float = 0.3) -> np.ndarray:
    """Sweep weights: big topics more, but every topic visited (adversarial prompts less)."""
    w = np.sqrt([len(pool.cat_rows[c]) for c in cats]).astype(float)
    w *= np.where(np.asarray([pool.cat_kind[c] for c in cats]) == "adversarial", adversarial, 1)
    return w / w.sum()


class Sweep:
    """Prompts without replacement across ``cats``; shared by hydra accounts so their slices
    are disjoint. ``block_mean`` > 0 walks topic by topic (blocks of about that many)."""

    def __init__(self, rng: np.random.Generator, pool, cats: list[int],
                 weights: np.ndarray | None = None, block_mean: int = 0):
        self.rng = rng
        self.queues = [rng.permutation(pool.cat_rows[c]) for c in cats]
        self.pos = np.zeros(len(cats), dtype=np.int64)
        self.sizes = np.asarray([len(q) for q in self.queues])
        w = np.ones(len(cats)) if weights is None else np.asarray(weights, dtype=float)
        self.weights = w / w.sum()
        self.block_mean = block_mean

    def set_weights(self, weights: np.ndarray) -> None:
        self.weights = np.asarray(weights, dtype=float) / np.sum(weights)

    def take(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        i = 0
        while i < n:
            alive = self.pos < self.sizes
            if not alive.any():               # everything asked once: start a second pass
                self.pos[:] = 0
                alive[:] = True
            w = self.weights * alive
            if w.sum() <= 0:
                w = alive.astype(float)
            w = w / w.sum()
            if self.block_mean:
                c = self.rng.choice(len(w), p=w)
                k = min(int(self.rng.geometric(1.0 / self.block_mean)), n - i,
                        self.sizes[c] - self.pos[c])
                out[i:i + k] = self.queues[c][self.pos[c]:self.pos[c] + k]
                self.pos[c] += k
                i += k
                continue
            for c in self.rng.choice(len(w), size=min(n - i, 512), p=w):
                if self.pos[c] < self.sizes[c]:
                    out[i] = self.queues[c][self.pos[c]]
                    self.pos[c] += 1
                    i += 1
                    if i == n:
                        break
        return out
