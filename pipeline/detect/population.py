"""What normal looks like, learned online from every tenant's window summaries, no labels.

Two parts, both small and shared by all tenants:

- Robust per-feature quantiles, kept as fixed-bin histograms over [0, 1] per *age bucket*
  (a tenant's first window is compared with other tenants' first windows, its 40th with
  other tenants' windows between the 32nd and the 63rd): novelty naturally falls as a
  tenant ages, so one pooled threshold would either miss old accounts that start sweeping
  or flag every new account. Quantiles come from the cumulative histogram (exact to one bin).
- One River :class:`~river.anomaly.HalfSpaceTrees` over the whole feature vector, whose
  score is itself tracked with a histogram and scored like any other feature.

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
PRIOR_WIDEN = 2.0       # a prior (learned elsewhere) has its median-to-p90 distance taken 2x wider


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
        self.prior: list[np.ndarray | None] = [None] * BUCKETS   # quantiles, see set_prior

    def set_prior(self, hist: np.ndarray, count: np.ndarray) -> None:
        """Quantiles to use for a bucket until it has ``min_windows`` windows of its own
        (:mod:`pipeline.detect.prior`). Never mixed with the traffic's own histograms: a prior
        that does not fit the deployment must not hold its population back."""
        own, own_n = self.hist, self.count
        self.hist, self.count = hist, count
        try:
            self.prior = [self._compute(b) if count[b] >= self.min_windows else None
                          for b in range(BUCKETS)]
        finally:
            self.hist, self.count = own, own_n
        for q in self.prior:          # learned elsewhere: conservative (PRIOR_WIDEN)
            if q is not None:
                q[:, 1] = q[:, 0] + PRIOR_WIDEN * (q[:, 1] - q[:, 0])

    def warm(self, bucket: int) -> bool:
        """Whether ``bucket`` has windows enough of its own traffic."""
        return bool(self.count[bucket] >= self.min_windows)

    def learn(self, bucket: int, x: np.ndarray) -> None:
        ok = ~np.isnan(x)
        idx = np.minimum((np.clip(x[ok], 0.0, 1.0) * self.bins).astype(np.int64), self.bins - 1)
        self.hist[bucket, np.flatnonzero(ok), idx] += 1
        self.count[bucket] += 1

    def _compute(self, bucket: int) -> np.ndarray:
        h = self.hist[bucket]
        cum = np.cumsum(h, axis=1)
        tot = cum[:, -1:]
        out = np.full((self.n_features, len(QUANTILES)), np.nan)
        for j, q in enumerate(QUANTILES):
            # first bin whose cumulative count reaches q of the total; report its upper edge
            k = (cum < np.maximum(q * tot, 1)).sum(axis=1)
            out[:, j] = (np.minimum(k, self.bins - 1) + 1) / self.bins
        out[tot[:, 0] < self.min_windows] = np.nan
        return out

    def quantiles(self, bucket: int) -> np.ndarray | None:
        """Quantiles for ``bucket``; while it is cold, the prior's for it, or the nearest
        younger warm bucket's; or None."""
        for b in range(bucket, -1, -1):
            if self.count[b] < self.min_windows:
                if b == bucket and self.prior[b] is not None:
                    return self.prior[b]
                continue
            if self._cache[b] is None or self.count[b] - self._cached_at[b] >= self.refresh:
                self._cache[b] = self._compute(b)
                self._cached_at[b] = self.count[b]
            return self._cache[b]
        return None
