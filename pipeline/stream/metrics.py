"""Worker counters, exposed in Prometheus text format on ``/metrics`` and logged every 10 s."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Metrics:
    events_in: int = 0
    dlq: int = 0
    events_detected: int = 0
    duplicates: int = 0
    replayed_skipped: int = 0
    tenants: int = 0
    sink_behind_s: float = 0.0
    batch_seconds: float = 0.0
    alerts: Counter = field(default_factory=Counter)
    lag: dict = field(default_factory=dict)

    def prometheus(self) -> str:
        lines = [
            "# TYPE coverwatch_events_in_total counter",
            f"coverwatch_events_in_total {self.events_in}",
            "# TYPE coverwatch_dlq_total counter",
            f"coverwatch_dlq_total {self.dlq}",
            "# TYPE coverwatch_events_detected_total counter",
            f"coverwatch_events_detected_total {self.events_detected}",
            "# TYPE coverwatch_duplicates_total counter",
            f"coverwatch_duplicates_total {self.duplicates}",
            "# TYPE coverwatch_redelivered_skipped_total counter",
            f"coverwatch_redelivered_skipped_total {self.replayed_skipped}",
            "# TYPE coverwatch_tenants_tracked gauge",
            f"coverwatch_tenants_tracked {self.tenants}",
            "# TYPE coverwatch_sink_behind_seconds gauge",
            f"coverwatch_sink_behind_seconds {self.sink_behind_s:.3f}",
            "# TYPE coverwatch_batch_seconds gauge",
            f"coverwatch_batch_seconds {self.batch_seconds:.4f}",
            "# TYPE coverwatch_consumer_lag gauge",
            *(f'coverwatch_consumer_lag{{topic="{t}"}} {n}' for t, n in sorted(self.lag.items())),
            "# TYPE coverwatch_alerts_total counter",
        ]
        for sev in ("warning", "critical"):
            lines.append(f'coverwatch_alerts_total{{severity="{sev}"}} {self.alerts[sev]}')
        return "\n".join(lines) + "\n"

    def log(self, logger) -> None:
        logger.info("in=%d dlq=%d detected=%d tenants=%d alerts=%d sink_behind=%.1fs",
                    self.events_in, self.dlq, self.events_detected, self.tenants,
                    sum(self.alerts.values()), self.sink_behind_s)
