"""PRADA baseline (Juuti et al., 2019, "PRADA: Protecting against DNN Model Stealing Attacks").

Per account and per class c, a growing set G_c of the account's queries: each new query's
minimum L2 distance to G_c joins the account's distance set D; the query joins G_c (and
its distance D_Gc) only when that distance exceeds T_c = max(T_c, mean(D_Gc) - std(D_Gc)).
Once |D| >= ``min_queries``, the Shapiro-Wilk statistic W of D is tested: natural queries
give roughly normal distances, synthetic/systematic ones do not, so W < ``delta`` flags.
Classes are the victim's predicted labels in the paper; an LLM has none, so the class is the
nearest of ``classes`` cosine k-means clusters fitted on benign calibration prompts.
``delta`` is set on benign calibration tenants (their lowest W) to flag ``target_fpr``.
It targets synthetic queries (small steps around seeds); a sweep of natural prompts has
*more* normal distances than a benign app that re-asks (exact repeats give distance 0).
Deviations for speed: W is recomputed every ``check_every`` queries (or every 1% of the
account's queries, if more) on the most recent 5,000 distances (scipy's Shapiro-Wilk limit).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats

from pipeline.bench.baselines.common import TenantStatistic, spherical_kmeans, vectors_of
from pipeline.contracts.events import Event

MAX_D = 5_000


@dataclass(slots=True)
class _Group:
    """G_c: the class's growing set (with squared norms), running mean/var of D_Gc, T_c."""

    vecs: np.ndarray
    sq: np.ndarray
    size: int = 1
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    t: float = 0.0

    def add(self, x: np.ndarray, d: float) -> None:
        if self.size == len(self.vecs):
            self.vecs = np.concatenate([self.vecs, np.empty_like(self.vecs)])
            self.sq = np.concatenate([self.sq, np.empty_like(self.sq)])
        self.vecs[self.size] = x
        self.sq[self.size] = x @ x
        self.size += 1
        self.n += 1                                   # Welford update of D_Gc
        delta = d - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (d - self.mean)
        self.t = max(self.t, self.mean - np.sqrt(self.m2 / self.n))


@dataclass(slots=True)
class _State:
    groups: dict = field(default_factory=dict)     # class -> _Group
    dists: list = field(default_factory=list)
    seen: int = 0
    w: float = 1.0


class PradaBaseline(TenantStatistic):
    name = "prada"
    higher_is_worse = False

    def __init__(self, threshold: float | None = 0.9, classes: int = 16, min_queries: int = 100,
                 check_every: int = 10, seed: int = 0, centroids: np.ndarray | None = None):
        if min_queries < 3 or check_every < 1:
            raise ValueError("need min_queries >= 3 and check_every >= 1")
        super().__init__(threshold)
        self.classes = classes
        self.min_queries = min_queries
        self.check_every = check_every
        self.seed = seed
        self.centroids = centroids

    def fit(self, events: Sequence[Event]) -> None:
        self.centroids = spherical_kmeans(vectors_of(events, seed=self.seed), self.classes,
                                          seed=self.seed)

    def _new_state(self):
        return _State()

    def _observe(self, st: _State, event: Event) -> float | None:
        st.seen += 1
        x = event.embedding
        if x is None:
            return None
        x = np.asarray(x, dtype=np.float32)
        c = int(np.argmax(self.centroids @ x)) if self.centroids is not None else 0
        g = st.groups.get(c)
        if g is None:
            vecs = np.empty((16, len(x)), np.float32)
            vecs[0] = x
            sq = np.empty(16, np.float32)
            sq[0] = x @ x
            st.groups[c] = _Group(vecs, sq)
            return None if len(st.dists) < self.min_queries else st.w
        d2 = g.sq[:g.size] - 2 * (g.vecs[:g.size] @ x) + x @ x
        d = float(np.sqrt(max(float(d2.min()), 0.0)))
        st.dists.append(d)
        if d > g.t:
            g.add(x, d)
        n = len(st.dists)
        if n < self.min_queries:
            return None
        if n == self.min_queries or n % max(self.check_every, n // 100) == 0:
            st.w = _shapiro(st.dists[-MAX_D:])
        return st.w

    def _summary(self, st: _State, stat: float) -> str:
        return (f"nearest-neighbour distances of {len(st.dists):,} queries are far from normal "
                f"(Shapiro-Wilk W={stat:.3f} < {self.threshold:.3f})")


def _shapiro(values: list[float]) -> float:
    v = np.asarray(values)
    if np.ptp(v) == 0:
        return 0.0          # all distances equal (e.g. one prompt repeated): maximally non-normal
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.shapiro(v).statistic)
