"""The protocol every detector (ours and the baselines) implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

from pipeline.contracts.alerts import Alert
from pipeline.contracts.events import Event


@dataclass(slots=True)
class Scored:
    """What the detector says about one event."""

    cell: int = 0            # coarse locality cell id of the event (0 when it had no vector)
    novel: bool = False      # first time this tenant reached that cell
    score: float = 0.0       # tenant's current anomaly score, comparable across tenants
    drift: float = 0.0       # tenant's current drift score against its own past
    alerts: list[Alert] = field(default_factory=list)
    # the tenant's window summary when this event closed a window (coverwatch), else None:
    # {"tenant_id", "ts_ms", "events_seen", "window", "features", "score", "cells_minhash"}
    summary: dict | None = None


class Detector(Protocol):
    def update(self, event: Event) -> Scored:
        """Learn from one event (event-time order per tenant) and say what fired."""

    def update_many(self, events: Iterable[Event]) -> list[Scored]:
        """Same as calling :meth:`update` on each, possibly faster."""

    def dump_tenant(self, tenant_id: str) -> bytes | None:
        """Serialised state of one tenant (None if unknown); small (aim < 16 KB)."""

    def load_tenant(self, tenant_id: str, state: bytes) -> None:
        """Restore one tenant's state written by :meth:`dump_tenant`."""
