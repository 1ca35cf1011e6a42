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


def test_cached_vectors_change_no_result():
    """Re-sent prompts reuse cached vectors (and shared vectors get their code once): the
    detector must see exactly what it sees when every prompt is embedded afresh."""
    from pipeline.detect.coverwatch import CoverwatchDetector
    from pipeline.embed.hashing import HashingEmbedder

    def stream():
        topics = [f"question {k} about topic {k % 7}: why does it work?" for k in range(40)]
        return [Event(f"e{i}", 1772366400000 + i * 1000, f"t{i % 3}",
                      prompt=topics[(i * 7) % 40] if i % 5 else f"fresh prompt number {i}",
                      output_tokens=100 + i % 50)
                for i in range(900)]

    def run(cache):
        p = Processor(CoverwatchDetector(window=20, min_windows=2), HashingEmbedder(dim=64),
                      vector_cache=cache)
        out = []
        for i in range(0, 900, 128):
            _, scored, _ = p.process(stream()[i:i + 128])
            out += [(s.cell, s.novel, s.score, s.drift) for s in scored]
        return out, len(p._vectors)

    fresh, n_fresh = run(0)
    cached, n_cached = run(16)
    assert n_fresh == 0 and n_cached == 16
    assert cached == fresh and any(c for c, *_ in fresh)
