"""The protocol every detector (ours and the baselines) implements."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from pipeline.contracts.events import Event
# the scored-batch types are contracts (the sink reads them); detectors import them from here
from pipeline.contracts.scored import (Scored, ScoredBatch, batch_alerts,  # noqa: F401
                                       scored_columns)


class Detector(Protocol):
    def update(self, event: Event) -> Scored:
        """Learn from one event (event-time order per tenant) and say what fired."""

    def update_many(self, events: Iterable[Event]) -> list[Scored]:
        """Same as calling :meth:`update` on each, possibly faster."""

    def dump_tenant(self, tenant_id: str) -> bytes | None:
        """Serialised state of one tenant (None if unknown); small (aim < 16 KB)."""

    def load_tenant(self, tenant_id: str, state: bytes) -> None:
        """Restore one tenant's state written by :meth:`dump_tenant`."""
