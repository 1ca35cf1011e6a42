"""What normal looks like, learned online from every tenant's window summaries, no labels.

Two parts, both small and shared by all tenants:

- Robust per-feature quantiles, kept as fixed-bin histograms over [0, 1] per *age bucket*
  (a tenant's first window is compared with other tenants' first windows, its 40th with
  other tenants' windows between the 32nd and the 63rd): novelty naturally falls as a
  tenant ages, so one pooled threshold would either miss old accounts that start sweeping
  or flag every new account. Quantiles come from the cumulative histogram (exact to one bin).
- One River :class:`~river.anomaly.HalfSpaceTrees` over the whole feature vector, whose
  score is itself tracked with a histogram and scored like any other feature.

A bucket can start from a *prior* (:mod:`pipeline.detect.prior`: the same histograms learned
from public traffic) worth :data:`PRIOR_WEIGHT` windows and mixed with the deployment's own
histogram, so a small gateway, or one whose tenants are mostly attackers, is judged against
what ordinary traffic looks like rather than against itself; the deployment's own windows
outweigh the prior as they come.

Each tenant feeds only a log-spaced subset of its windows (:func:`feeds_population`), so a
machine-rate tenant with thousands of windows weighs about as much as a small one: the
attackers are part of the population, and they must not become its high quantiles.

>>> import numpy as np
>>> pop = Population(n_features=2, min_windows=10)
>>> for i in range(100):
...     pop.learn(0, np.array([0.1 + 0.001 * i, float("nan")]))
>>> q = pop.quantiles(0)
>>> round(float(q[0, 0]), 2), bool(np.isnan(q[1, 0]))
(0.15, True)
>>> pop.quantiles(3) is q      # an older bucket with no data falls back to a younger one
True
"""
from __future__ import annotations

import numpy as np

BUCKETS = 8
QUANTILES = (0.5, 0.9, 0.99)
PRIOR_WIDEN = 2.0       # a prior (learned elsewhere) has its spread above the median taken 2x wider
PRIOR_WEIGHT = 200      # the prior counts as this many windows of each bucket


def age_bucket(window_index: int) -> int:
    """1 -> 0, 2-3 -> 1, 4-7 -> 2, ... 128+ -> 7 (window_index counts from 1)."""
    return min(max(window_index, 1).bit_length() - 1, BUCKETS - 1)


def feeds_population(window_index: int) -> bool:
    """Windows 1-4, then powers of two, then every 64th: a tenant's weight grows like log n."""
    k = window_index
    return k <= 4 or (k & (k - 1)) == 0 or k % 64 == 0


class Population:
    """Per-bucket histograms of features in [0, 1]; ``quantiles(bucket) -> [n_features, 3]``."""

    def __init__(self, n_features: int, bins: int = 200, min_windows: int = 30,
                 refresh: int = 16):
        if n_features < 1 or bins < 10 or min_windows < 1 or refresh < 1:
            raise ValueError("need n_features >= 1, bins >= 10, min_windows >= 1, refresh >= 1")
        self.n_features = n_features
        self.bins = bins
        self.min_windows = min_windows
        self.refresh = refresh
        self.hist = np.zeros((BUCKETS, n_features, bins), dtype=np.int64)
        self.count = np.zeros(BUCKETS, dtype=np.int64)
        self._cache: list[np.ndarray | None] = [None] * BUCKETS
        self._cached_at = np.full(BUCKETS, -1, dtype=np.int64)
        # per bucket: the prior's histogram scaled to PRIOR_WEIGHT windows, and its quantiles
        self.prior: list[np.ndarray | None] = [None] * BUCKETS
        self._prior_q: list[np.ndarray | None] = [None] * BUCKETS

    def set_prior(self, hist: np.ndarray, count: np.ndarray) -> None:
        """Start each bucket from a prior (:mod:`pipeline.detect.prior`) worth
        :data:`PRIOR_WEIGHT` windows, mixed with the traffic's own histogram: the prior
        anchors a small or attacker-heavy deployment, its own windows outweigh it as they
        come. Learned elsewhere, so conservative: mass above each feature's median is
        stretched :data:`PRIOR_WIDEN` times further from it."""
        self.prior = [None] * BUCKETS
        self._prior_q = [None] * BUCKETS
        for b in range(BUCKETS):
            if count[b] < self.min_windows:
                continue
            h = np.asarray(hist[b], dtype=np.float64)
            self.prior[b] = _stretch(h, PRIOR_WIDEN) * (PRIOR_WEIGHT / count[b])
            self._prior_q[b] = _quantiles(self.prior[b], self.min_windows)

    def __getstate__(self) -> dict:
        # the prior is package data: checkpoints carry the traffic's own histograms only
        # (the detector sets its prior again after loading one)
        state = dict(self.__dict__)
        state["prior"] = [None] * BUCKETS
        state["_prior_q"] = [None] * BUCKETS
        return state

    def prior_quantiles(self, bucket: int) -> np.ndarray | None:
        """The prior's quantiles alone for ``bucket`` (None without a prior): a fixed
        reference, which the traffic (attackers included) cannot move."""
        return self._prior_q[bucket]

    def learn(self, bucket: int, x: np.ndarray) -> None:
        ok = ~np.isnan(x)
        idx = np.minimum((np.clip(x[ok], 0.0, 1.0) * self.bins).astype(np.int64), self.bins - 1)
        self.hist[bucket, np.flatnonzero(ok), idx] += 1
        self.count[bucket] += 1

    def _compute(self, bucket: int) -> np.ndarray:
        h = self.hist[bucket]
        if self.prior[bucket] is not None:
            h = h + self.prior[bucket]
        return _quantiles(h, self.min_windows)

    def quantiles(self, bucket: int, fresh: bool = False) -> np.ndarray | None:
        """Quantiles for ``bucket`` (its own windows and its prior); while it has neither
        enough, the nearest younger bucket's; or None. Recomputed every ``refresh``
        windows (``fresh``: now, leaving the kept ones as they are)."""
        for b in range(bucket, -1, -1):
            if self.count[b] < self.min_windows and self.prior[b] is None:
                continue
            if fresh:
                return self._compute(b)
            if self._cache[b] is None or self.count[b] - self._cached_at[b] >= self.refresh:
                self._cache[b] = self._compute(b)
                self._cached_at[b] = self.count[b]
            return self._cache[b]
        return None


def _quantiles(hist: np.ndarray, min_windows: int) -> np.ndarray:
    """``[features, len(QUANTILES)]`` from ``hist [features, bins]``: the upper edge of the
    first bin whose cumulative count reaches each quantile (exact to one bin); NaN for a
    feature with fewer than ``min_windows`` windows."""
    bins = hist.shape[1]
    cum = np.cumsum(hist, axis=1)
    tot = cum[:, -1:]
    out = np.full((hist.shape[0], len(QUANTILES)), np.nan)
    for j, q in enumerate(QUANTILES):
        k = (cum < np.maximum(q * tot, 1e-9)).sum(axis=1)
        out[:, j] = (np.minimum(k, bins - 1) + 1) / bins
    out[tot[:, 0] < min_windows] = np.nan
    return out


def _stretch(hist: np.ndarray, factor: float) -> np.ndarray:
    """``hist [features, bins]`` with each feature's mass above its median bin moved
    ``factor`` times as far from it (clipped to the last bin)."""
    out = np.zeros_like(hist)
    bins = hist.shape[1]
    idx = np.arange(bins)
    for f in range(hist.shape[0]):
        tot = hist[f].sum()
        if tot <= 0:
            continue
        m = int(np.searchsorted(np.cumsum(hist[f]), 0.5 * tot))
        to = np.where(idx > m, np.minimum(m + np.round(factor * (idx - m)), bins - 1), idx)
        np.add.at(out[f], to.astype(np.int64), hist[f])
    return out
