"""Content drift per tenant: the tenant's latest window against its own past (MMD).

A thief with a stolen key often goes through the victim's own client: same app, same user
agent, same address. Nothing about the requests changes except what they ask. So each
tenant keeps the mean of its queries' random Fourier features (Rahimi & Recht 2007) over
its past, and each window's mean is compared with it: the squared distance between the two
means is the (biased) MMD estimate with a Gaussian kernel, the statistic of the MMD
extraction detector (Liu et al. 2026), in 64 floats per tenant instead of a sample.

The statistic is divided by what it would be if the window came from the same distribution
as the past (``(1/n_w + 1/n_p) (1 - |mean|^2)`` for features of unit norm), so ``z`` is
about 1 for a tenant whose content did not move, whatever its breadth or age, and grows
with the share of the window that comes from elsewhere. The feature is
``log(1 + max(z - 1, 0)) / log(100)`` clipped to [0, 1].

>>> import numpy as np
>>> rf = RandomFeatures(seed=1)
>>> rng = np.random.default_rng(0)
>>> home = rng.standard_normal(16)
>>> same = [home + 0.5 * rng.standard_normal(16) for _ in range(400)]
>>> rows = BatchRows(*rf.features(same))
>>> st = DriftState()
>>> fold_window(st, rows.take(list(range(350)))) is None     # no past yet: nothing to compare
True
>>> round(fold_window(st, rows.take(list(range(350, 400)))), 2) < 0.3
True
>>> away = BatchRows(*rf.features([rng.standard_normal(16) * 2 for _ in range(50)]))
>>> fold_window(st, away.take(list(range(50)))) > 0.5
True
"""
from __future__ import annotations

import math

import numpy as np

N_FEATURES = 64
BANDWIDTH = 1.0          # Gaussian kernel width on unit vectors (squared distances 0..4)
MIN_PAST = 100           # past queries before a window is judged
MIN_WINDOW = 10          # queries with a vector a window needs to be judged
PAST_CAP = 2000          # the past is a running mean over about this many queries
_LOG100 = math.log(100.0)


class RandomFeatures:
    """Seeded random Fourier features of unit-normalised vectors, per dimension."""

    def __init__(self, seed: int = 0, n_features: int = N_FEATURES,
                 bandwidth: float = BANDWIDTH):
        self.seed = seed
        self.n_features = n_features
        self.bandwidth = bandwidth
        self._w: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _weights(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        w = self._w.get(dim)
        if w is None:
            rng = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, dim, 7])
            w = self._w[dim] = (
                (rng.standard_normal((dim, self.n_features)) / self.bandwidth).astype(np.float32),
                rng.uniform(0, 2 * np.pi, self.n_features).astype(np.float32))
        return w

    def features(self, vectors: list) -> tuple[np.ndarray, np.ndarray]:
        """``(phi float32[n, D], has bool[n])``: zero rows for events without a vector."""
        n = len(vectors)
        phi = np.zeros((n, self.n_features), np.float32)
        dims = np.array([0 if v is None else len(v) for v in vectors], np.int64)
        for d in np.unique(dims[dims > 0]).tolist():
            idx = np.flatnonzero(dims == d)
            x = np.array([vectors[i] for i in idx], dtype=np.float32)
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            w, b = self._weights(d)
            phi[idx] = np.cos(x @ w + b) * np.float32(math.sqrt(2.0 / self.n_features))
        return phi, dims > 0


_FIX = float(1 << 24)    # window sums are kept in fixed point: exact, so any batching of the
                         # same events gives bit-identical state and features


class BatchRows:
    """One batch's random features in fixed point and rare-cell flags, converted once.

    A tenant takes its rows with :meth:`take`; with many tenants each has one or two
    events per batch, and converting per tenant (five numpy calls for a 64-float row)
    cost more than the rest of its drift bookkeeping (a third of the core's time at 100k
    tenants, ``bench throughput``'s scaling rows)."""

    __slots__ = ("fx", "has", "judged", "hit", "counts")

    def __init__(self, phi: np.ndarray, has: np.ndarray, rare: np.ndarray | None = None):
        # rows without a vector are zero in phi, so they add nothing to a sum
        self.fx = np.rint(phi.astype(np.float64) * _FIX).astype(np.int64)
        if rare is None:
            rare = np.full(len(has), -1, np.int8)      # no row judged for rarity
        judged, hit = rare >= 0, rare > 0
        # per row (has a vector, judged, rare): lists for one row, int columns for many
        self.counts = np.stack([has, judged, hit], axis=1).astype(np.int64)
        self.has, self.judged, self.hit = has.tolist(), judged.tolist(), hit.tolist()

    def take(self, rows: list[int]) -> tuple:
        """``(fixed-point sum of the rows' features or None, rows with a vector, rows judged
        for rarity, rare rows)``, as :meth:`DriftState.add` takes them."""
        if len(rows) == 1:
            i = rows[0]
            k = int(self.has[i])
            # a copy: a view would keep the whole batch's array alive in the tenant's state
            return (self.fx[i].copy() if k else None), k, int(self.judged[i]), int(self.hit[i])
        k, judged, hits = self.counts[rows].sum(axis=0).tolist()
        return (self.fx[rows].sum(axis=0) if k else None), k, judged, hits


class DriftState:
    """A tenant's past mean and current window sum of random features (about 800 bytes)."""

    __slots__ = ("past", "n_past", "win", "n_win", "rare", "n_rare")

    def __init__(self):
        self.past: np.ndarray | None = None
        self.n_past = 0.0
        self.win: np.ndarray | None = None
        self.n_win = 0
        self.rare = self.n_rare = 0        # the window's rare-cell queries, of those judged

    def add(self, terms: tuple) -> None:
        """Fold rows of a window that has not closed yet: ``terms`` from
        :meth:`BatchRows.take`."""
        win, k, judged, hits = terms
        self.n_rare += judged
        self.rare += hits
        if k:
            self.win = win if self.win is None else self.win + win
            self.n_win += k

    def __getstate__(self):
        return (self.past, self.n_past, self.win, self.n_win, self.rare, self.n_rare)

    def __setstate__(self, st):
        self.past, self.n_past, self.win, self.n_win, self.rare, self.n_rare = st


def rare_share(st: DriftState) -> float | None:
    """Share of the window's judged queries in rare cells (None: none judged); resets it."""
    out = st.rare / st.n_rare if st.n_rare >= MIN_WINDOW else None
    st.rare = st.n_rare = 0
    return out


def fold_window(st: DriftState, terms: tuple) -> float | None:
    """Close the window (its last rows, ``terms`` from :meth:`BatchRows.take`): the drift
    feature in [0, 1], or None when the past or the window is too small to judge; the
    window joins the past."""
    st.add(terms)
    n_w, win = st.n_win, st.win
    st.win, st.n_win = None, 0
    if not n_w:
        return None
    out = None
    win = win / _FIX
    m_w = win / n_w
    if st.past is not None and st.n_past >= MIN_PAST and n_w >= MIN_WINDOW:
        diff = m_w - st.past
        null = (1.0 / n_w + 1.0 / st.n_past) * max(1.0 - float(st.past @ st.past), 0.05)
        z = float(diff @ diff) / null
        out = min(1.0, math.log1p(max(z - 1.0, 0.0)) / _LOG100)
    if st.past is None:
        st.past, st.n_past = m_w, float(n_w)
    else:
        n = st.n_past
        st.past = (st.past * n + win) / (n + n_w)
        st.n_past = min(n + n_w, PAST_CAP)
    return out
