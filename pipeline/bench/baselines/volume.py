"""Volume baseline: the per-account rate limit most API providers run.

Flags a tenant whose queries in the trailing hour or the trailing day exceed the limit. The
statistic is the larger of the two counts, each divided by its limit, so one threshold (1.0)
flags either; the two limits are set on benign calibration traffic at the quantile that
flags ``target_fpr`` of benign tenants (half the budget each). Content-blind by design:
slow, split or human-paced extraction stays under any limit heavy legitimate users need.

>>> from pipeline.contracts.events import Event
>>> det = VolumeBaseline(per_hour=100, per_day=1000)
>>> fired = [a for i in range(150) for a in det.update(Event(f"e{i}", 10**12 + i * 1000, "t")).alerts]
>>> [(a.detector, a.events_seen) for a in fired]
[('volume', 101)]
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pipeline.bench.baselines.common import TenantStatistic
from pipeline.contracts.events import Event

HOUR_MS, DAY_MS = 3_600_000, 86_400_000


@dataclass(slots=True)
class _State:
    hour: deque = field(default_factory=deque)
    day: deque = field(default_factory=deque)
    seen: int = 0


class VolumeBaseline(TenantStatistic):
    name = "volume"

    def __init__(self, threshold: float | None = 1.0, per_hour: float = 1_000,
                 per_day: float = 10_000):
        if per_hour <= 0 or per_day <= 0:
            raise ValueError("limits must be positive")
        super().__init__(threshold)
        self.per_hour = per_hour
        self.per_day = per_day

    def _new_state(self):
        return _State()

    def _observe(self, st: _State, event: Event) -> float:
        st.seen += 1
        t = event.ts_ms
        st.hour.append(t)
        st.day.append(t)
        while st.hour[0] <= t - HOUR_MS:
            st.hour.popleft()
        while st.day[0] <= t - DAY_MS:
            st.day.popleft()
        return max(len(st.hour) / self.per_hour, len(st.day) / self.per_day)

    def _summary(self, st: _State, stat: float) -> str:
        return (f"{len(st.hour):,} queries in the last hour and {len(st.day):,} in the last day, "
                f"over the limits of {self.per_hour:,.0f}/hour or {self.per_day:,.0f}/day")

    @classmethod
    def calibrate(cls, events: Sequence[Event], target_fpr: float = 0.01, **params):
        """Each limit at the (1 - target_fpr/2) quantile of benign tenants' peak counts."""
        probe = cls(threshold=None, per_hour=1.0, per_day=1e12)   # statistic = hourly count
        peak_h: dict[str, int] = {}
        peak_d: dict[str, int] = {}
        for e in events:
            probe.update(e)
            st = probe._tenants[e.tenant_id]
            peak_h[e.tenant_id] = max(peak_h.get(e.tenant_id, 0), len(st.hour))
            peak_d[e.tenant_id] = max(peak_d.get(e.tenant_id, 0), len(st.day))
        q = 1 - target_fpr / 2
        per_hour = float(np.quantile(list(peak_h.values()), q)) if peak_h else 1_000
        per_day = float(np.quantile(list(peak_d.values()), q)) if peak_d else 10_000
        return cls(threshold=1.0, per_hour=max(per_hour, 1.0), per_day=max(per_day, 1.0),
                   **params)
