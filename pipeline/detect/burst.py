"""A first, deliberately simple detector: a tenant bursting far above its own rate.

It keeps, per tenant, an exponentially weighted rate over event time and a count of events
in the current one-minute bucket. When a minute's count exceeds ``ratio`` times the tenant's
usual per-minute rate (and at least ``min_events``), it alerts once per episode.

>>> from pipeline.contracts.events import Event
>>> det = BurstDetector(min_events=50, ratio=5.0)
>>> t0 = 1767225600000
>>> quiet = [det.update(Event(f"q{i}", t0 + i * 60_000, "t1")) for i in range(30)]
>>> loud = [det.update(Event(f"l{i}", t0 + 31 * 60_000 + i * 100, "t1")) for i in range(100)]
>>> [a.detector for s in quiet + loud for a in s.alerts]
['burst']
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass

from pipeline.contracts.alerts import Alert
from pipeline.contracts.events import Event
from pipeline.detect.base import Scored

MINUTE_MS = 60_000


@dataclass(slots=True)
class _Tenant:
    minute: int = -1
    in_minute: int = 0
    rate: float = 0.0       # EWMA of events per minute over closed minutes
    minutes: int = 0
    seen: int = 0
    episode: int = 0
    alerting: bool = False


class BurstDetector:
    def __init__(self, min_events: int = 200, ratio: float = 10.0, alpha: float = 0.1):
        if ratio <= 1 or min_events < 1 or not 0 < alpha <= 1:
            raise ValueError("need ratio > 1, min_events >= 1, 0 < alpha <= 1")
        self.min_events = min_events
        self.ratio = ratio
        self.alpha = alpha
        self._tenants: dict[str, _Tenant] = {}

    def update(self, event: Event) -> Scored:
        t = self._tenants.get(event.tenant_id)
        if t is None:
            t = self._tenants[event.tenant_id] = _Tenant()
        t.seen += 1
        minute = event.ts_ms // MINUTE_MS
        if minute != t.minute:
            if t.minute >= 0:
                # close the previous minute and any empty minutes since
                gap = min(minute - t.minute - 1, 1000)
                t.rate += self.alpha * (t.in_minute - t.rate)
                t.rate *= (1 - self.alpha) ** gap
                t.minutes += 1 + gap
            t.minute, t.in_minute = minute, 0
            t.alerting = False
        t.in_minute += 1
        baseline = max(t.rate, 1.0)
        score = t.in_minute / baseline
        scored = Scored(score=score)
        if t.in_minute >= self.min_events and score >= self.ratio and not t.alerting:
            t.alerting = True
            t.episode += 1
            severity = "critical" if score >= 3 * self.ratio else "warning"
            scored.alerts.append(Alert.new(
                tenant_id=event.tenant_id, detector="burst", ts_ms=event.ts_ms,
                severity=severity, score=score, threshold=self.ratio, events_seen=t.seen,
                episode=t.episode, evidence={
                    "summary": (f"{t.in_minute:,} queries in one minute, {score:,.0f}x its "
                                f"usual {baseline:,.1f} per minute"),
                    "queries_this_minute": t.in_minute, "usual_per_minute": round(baseline, 2),
                    "signals": ["volume"]}))
        return scored

    def update_many(self, events):
        return [self.update(e) for e in events]

    def dump_tenant(self, tenant_id: str) -> bytes | None:
        t = self._tenants.get(tenant_id)
        return None if t is None else pickle.dumps(t)

    def load_tenant(self, tenant_id: str, state: bytes) -> None:
        self._tenants[tenant_id] = pickle.loads(state)

    def forget_tenant(self, tenant_id: str) -> None:
        self._tenants.pop(tenant_id, None)
