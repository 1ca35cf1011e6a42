"""The alert contract: what SREs read on the ``alerts`` topic and analysts in ClickHouse.

``alert_id`` is a hash of what the alert is *about* (tenant, detector, episode), never of
wall-clock time, so the same input always yields the same id and a re-delivered alert can
be de-duplicated downstream.

>>> a = Alert.new(tenant_id="t1", detector="burst", ts_ms=1767225600000, severity="critical",
...               score=12.0, threshold=5.0, events_seen=300, episode=1,
...               evidence={"summary": "300 queries in 60 s, 12x its own rate"})
>>> a.alert_id == Alert.new(tenant_id="t1", detector="burst", ts_ms=0, severity="warning",
...                         score=0, threshold=0, events_seen=0, episode=1,
...                         evidence={"summary": ""}).alert_id
True
>>> sorted(a.to_dict())[:3]
['alert_id', 'detector', 'detector_version']
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pipeline.contracts.events import ms_to_iso

SEVERITIES = ("warning", "critical")


def alert_id_for(tenant_id: str, detector: str, episode: int | str) -> str:
    key = f"{tenant_id}\x1f{detector}\x1f{episode}".encode()
    return hashlib.blake2b(key, digest_size=12).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Alert:
    alert_id: str
    ts: str
    tenant_id: str
    severity: str
    detector: str
    score: float
    threshold: float
    events_seen: int
    evidence: dict[str, Any]
    detector_version: str
    related_tenants: list[str] = field(default_factory=list)
    emitted_at: str = ""

    @classmethod
    def new(cls, *, tenant_id: str, detector: str, ts_ms: int, severity: str, score: float,
            threshold: float, events_seen: int, evidence: dict[str, Any], episode: int | str,
            detector_version: str = "", related_tenants: list[str] | None = None) -> Alert:
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}")
        if "summary" not in evidence:
            raise ValueError("evidence needs a 'summary' sentence")
        return cls(alert_id=alert_id_for(tenant_id, detector, episode), ts=ms_to_iso(ts_ms),
                   tenant_id=tenant_id, severity=severity, detector=detector,
                   score=float(score), threshold=float(threshold), events_seen=int(events_seen),
                   evidence=evidence, detector_version=detector_version,
                   related_tenants=list(related_tenants or []))

    def stamped(self, detector_version: str = "") -> Alert:
        """Set ``emitted_at`` (wall clock) when the alert leaves the process, and the
        version of the detector that ran (given by the shell as data, so this contract
        does not depend on the detector) unless the alert names its own."""
        if not self.emitted_at:
            self.emitted_at = now_iso()
        if not self.detector_version:
            self.detector_version = detector_version
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "ts": self.ts, "emitted_at": self.emitted_at,
            "tenant_id": self.tenant_id, "severity": self.severity, "detector": self.detector,
            "score": self.score, "threshold": self.threshold, "events_seen": self.events_seen,
            "related_tenants": self.related_tenants, "evidence": self.evidence,
            "detector_version": self.detector_version,
        }

