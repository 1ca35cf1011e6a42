"""The shared processing path: duplicates dropped, a poisoned event set aside, not fatal."""
from __future__ import annotations

from pipeline.contracts.events import Event
from pipeline.detect.burst import BurstDetector
from pipeline.process import Processor


class Fussy(BurstDetector):
    """Fails on one tenant, like a detector bug triggered by one customer's data."""

    def update(self, event):
        if event.tenant_id == "poison":
            raise RuntimeError("boom")
        return super().update(event)


def events(tenant, n, start=0):
    return [Event(f"{tenant}-{i}", 1772366400000 + i * 1000, tenant) for i in range(start, n)]


def test_duplicates_are_dropped_across_batches():
    p = Processor(BurstDetector())
    kept, _, _ = p.process(events("a", 10))
    again, _, _ = p.process(events("a", 15))
    assert len(kept) == 10 and len(again) == 5 and p.duplicates == 10


def test_a_failing_event_is_set_aside_and_the_rest_processed():
    p = Processor(Fussy())
    batch = events("a", 5) + events("poison", 2) + events("b", 5)
    kept, scored, alerts, failed = p.process_safely(batch)
    assert [e.tenant_id for e, _ in failed] == ["poison", "poison"]
    assert "boom" in failed[0][1]
    assert len(kept) == len(scored) == 10
