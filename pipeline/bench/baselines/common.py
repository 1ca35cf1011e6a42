"""What every baseline shares: a per-tenant statistic, one alert per tenant, calibration.

A baseline computes one number per tenant after each event (``_observe``); the tenant is
flagged the first time that number crosses ``threshold``. :meth:`TenantStatistic.calibrate`
runs the baseline on *benign calibration* traffic with no threshold and puts the threshold
at the quantile that flags ``target_fpr`` of those tenants, which is how a provider would
set a limit it can live with. Baselines that calibrate differently (MMD: per window)
override it.
"""
from __future__ import annotations

import pickle
from typing import Iterable, Sequence

import numpy as np

from pipeline.contracts.alerts import Alert
from pipeline.contracts.events import Event
from pipeline.detect.base import Scored


class TenantStatistic:
    name = "baseline"
    higher_is_worse = True      # False: flag when the statistic falls *below* the threshold

    def __init__(self, threshold: float | None = None):
        self.threshold = threshold
        self._tenants: dict[str, object] = {}
        self._flagged: set[str] = set()
        self._extreme: dict[str, float] = {}     # most alarming value seen per tenant

    # subclasses: new per-tenant state, and the statistic after one event (None: not yet)
    def _new_state(self):
        raise NotImplementedError

    def _observe(self, state, event: Event) -> float | None:
        raise NotImplementedError

    def _summary(self, state, stat: float) -> str:
        return f"{self.name} statistic {stat:.4g} crossed {self.threshold:.4g}"

    def _seen(self, state) -> int:
        return getattr(state, "seen", 0)

    def fit(self, events: Sequence[Event]) -> None:
        """Learn shared structure (cells, reference sample) from benign calibration events."""

    def update(self, event: Event) -> Scored:
        tid = event.tenant_id
        st = self._tenants.get(tid)
        if st is None:
            st = self._tenants[tid] = self._new_state()
        stat = self._observe(st, event)
        scored = Scored(score=0.0 if stat is None else float(stat))
        if stat is None:
            return scored
        prev = self._extreme.get(tid)
        if prev is None or (stat > prev if self.higher_is_worse else stat < prev):
            self._extreme[tid] = float(stat)
        if self.threshold is not None and tid not in self._flagged and self._crosses(stat):
            self._flagged.add(tid)
            scored.alerts.append(Alert.new(
                tenant_id=tid, detector=self.name, ts_ms=event.ts_ms, severity="warning",
                score=stat, threshold=self.threshold, events_seen=self._seen(st), episode=1,
                detector_version=f"baseline-{self.name}-1",
                evidence={"summary": self._summary(st, stat), "signals": [self.name]}))
        return scored

    def _crosses(self, stat: float) -> bool:
        return stat > self.threshold if self.higher_is_worse else stat < self.threshold

    def update_many(self, events: Iterable[Event]) -> list[Scored]:
        return [self.update(e) for e in events]

    def dump_tenant(self, tenant_id: str) -> bytes | None:
        st = self._tenants.get(tenant_id)
        return None if st is None else pickle.dumps((st, tenant_id in self._flagged))

    def load_tenant(self, tenant_id: str, state: bytes) -> None:
        st, flagged = pickle.loads(state)
        self._tenants[tenant_id] = st
        if flagged:
            self._flagged.add(tenant_id)

    @classmethod
    def calibrate(cls, events: Sequence[Event], target_fpr: float = 0.01, **params):
        """Fit on benign ``events`` and set the threshold that flags ``target_fpr`` of them."""
        det = cls(threshold=None, **params)
        det.fit(events)
        for e in events:
            det.update(e)
        values = np.asarray(list(det._extreme.values()), dtype=float)
        q = 1 - target_fpr if cls.higher_is_worse else target_fpr
        det.threshold = float(np.quantile(values, q)) if len(values) else None
        det._reset_tenants()
        return det

    def _reset_tenants(self) -> None:
        self._tenants.clear()
        self._flagged.clear()
        self._extreme.clear()


def vectors_of(events: Sequence[Event], limit: int = 20_000, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` embeddings from ``events`` (uniform sample), float32 [n, dim]."""
    idx = [i for i, e in enumerate(events) if e.embedding is not None]
    if len(idx) > limit:
        idx = sorted(np.random.default_rng(seed).choice(idx, size=limit, replace=False))
    return np.asarray([events[i].embedding for i in idx], dtype=np.float32)


def spherical_kmeans(x: np.ndarray, k: int, iters: int = 12, seed: int = 0) -> np.ndarray:
    """Unit-norm centroids of ``x`` (cosine k-means): partitions the embedding space."""
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    c = x[rng.choice(len(x), size=k, replace=False)].copy()
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        sums = np.zeros_like(c)
        np.add.at(sums, assign, x)
        empty = np.linalg.norm(sums, axis=1) == 0
        sums[empty] = x[rng.choice(len(x), size=int(empty.sum()))]
        c = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return c.astype(np.float32)


def nearest_cell(centroids: np.ndarray, v: np.ndarray) -> int:
    return int(np.argmax(centroids @ v))
