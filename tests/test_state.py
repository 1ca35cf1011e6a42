"""pipeline/stream/state.py: what a restarted worker restores, skips and discards.

The driver below runs the worker's own batch core (:class:`pipeline.stream.batch.BatchCore`:
restore unknown tenants from the table, skip events at or below the position a tenant has
learned up to, process, write the touched tenants back) and the campaign stage over the
summaries, one event per message. A "crash" is a new set of objects (detector, sketcher,
stage, Checkpoints) over the same table and data directory, with the batches after the
last commit delivered again.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from pipeline import build
from pipeline.campaigns import AccountSketcher, CampaignStage
from pipeline.contracts.events import Event
from pipeline.detect.coverwatch import CoverwatchDetector
from pipeline.process import Processor
from pipeline.settings import Settings
from pipeline.stream import state as state_mod
from pipeline.stream.batch import BatchCore
from pipeline.stream.state import Checkpoints
from pipeline.testing.batches import messages

from tests.test_detector_checks import stream

BATCH = 100


class Worker:
    """The detect agent's state handling over a dict standing in for the Faust table."""

    def __init__(self, table: dict, data_dir: str):
        # a coverage scale of 0.9: in this small synthetic world the late sweepers sit just
        # above 1.0 (no answer length helps them since issue 14), and this test is about
        # restoring state, so it needs their alerts, not the shipped threshold
        self.det = CoverwatchDetector(window=10, min_windows=5, seed=3,
                                      rule_scales=(1.45, 0.9, 2.0, 0.5, 1.7))
        self.sketcher = AccountSketcher(seed=0)
        self.stage = CampaignStage(seed=0, warmup=5, min_members=2)
        self.proc = Processor(self.det, None, sketcher=self.sketcher)
        self.table = table
        self.cp = build.checkpoints(Settings(data_dir=data_dir), self.proc, self.stage)
        self.core = BatchCore(self.proc, self.cp, table.get, "events")
        self.skipped = 0

    def batch(self, offset: int, events) -> list:
        d = self.core.run(messages(events, start=offset))
        assert not d.dead
        for key, value in d.states:
            if value is None:
                self.table.pop(key, None)
            else:
                self.table[key] = value
        self.skipped += d.skipped
        return d.alerts + self.stage.update_many(d.summaries)

    def run(self, events, start: int, end: int) -> list:
        out = []
        for b in range(start, end, BATCH):
            out += self.batch(b, events[b:b + BATCH])
        return out


def key(alerts):
    return sorted({(a.alert_id, a.tenant_id, a.events_seen, a.severity, a.detector)
                   for a in alerts})


@pytest.fixture(scope="module")
def events():
    """The check suite's stream, and three sweepers that start after the crash point."""
    base = stream(3000, seed=4)
    rng = np.random.default_rng(9)
    late = [Event(f"late{k}-{i}", base[1600].ts_ms + k * 60_000 + i * 300, f"late{k}",
                  prompt=f"Explain step by step: item {i} of catalogue {k}",
                  embedding=rng.standard_normal(24).astype(np.float32), output_tokens=1500)
            for k in range(3) for i in range(120)]
    return sorted(base + late, key=lambda e: e.ts_ms)


@pytest.fixture(scope="module")
def uninterrupted(events, tmp_path_factory):
    w = Worker({}, str(tmp_path_factory.mktemp("ref")))
    alerts = w.run(events, 0, len(events))
    assert alerts, "no alert: the crash test would compare nothing"
    return alerts


def test_alert_ids_survive_a_crash(events, uninterrupted, tmp_path):
    """Crash after 1,500 events with the last two batches uncommitted: the restarted worker
    restores tenants, population and campaign stage, skips what it had learned, and raises
    the same alerts (same alert_id, same events_seen) as a run that never crashed."""
    table: dict = {}
    first = Worker(table, str(tmp_path))
    before = first.run(events, 0, 1500)
    first.cp.maybe_save_globals(force=True)
    second = Worker(table, str(tmp_path))          # the restart
    assert second.det.dump_population() == first.det.dump_population()
    assert second.stage.dump() == first.stage.dump()
    after = second.run(events, 1300, len(events))  # 200 events delivered again
    assert second.skipped == 200
    assert key(before + after) == key(uninterrupted)
    assert {a.tenant_id for a in after} >= {"late0", "late1", "late2"}, key(after)


def test_a_restart_without_the_table_differs(events, uninterrupted, tmp_path):
    """The control: a restart that restores nothing (empty table) gives other alerts, so the
    test above does depend on the restore."""
    first = Worker({}, str(tmp_path))
    before = first.run(events, 0, 1500)
    first.cp.maybe_save_globals(force=True)
    second = Worker({}, str(tmp_path))
    assert key(before + second.run(events, 1300, len(events))) != key(uninterrupted)


def test_state_of_another_version_is_discarded(events, tmp_path, monkeypatch, caplog):
    table: dict = {}
    monkeypatch.setattr(state_mod, "DETECTOR_VERSION", "0.0.0-old")
    old = Worker(table, str(tmp_path))
    old.run(events, 0, 600)
    old.cp.maybe_save_globals(force=True)
    monkeypatch.undo()
    assert table
    with caplog.at_level(logging.WARNING):
        new = Worker(table, str(tmp_path))
        new.cp.restore("t1", table[b"t1"])
    assert "another detector version" in caplog.text and "another version" in caplog.text
    assert new.det.dump_tenant("t1") is None and new.sketcher.dump_tenant("t1") is None
    assert new.det.dump_population() != old.det.dump_population()
    assert new.stage.summaries == 0


def test_an_unreadable_checkpoint_starts_the_tenant_fresh(events, tmp_path, caplog):
    w = Worker({}, str(tmp_path))
    w.run(events, 0, 300)
    good = w.table[b"t1"]
    broken = good[:state_mod._HEADER.size] + b"\x00\x00\x00\x10" + b"not a pickle at all!"
    fresh = Worker({b"t1": broken}, str(tmp_path / "other"))
    with caplog.at_level(logging.ERROR):
        fresh.cp.restore("t1", broken)
    assert "unreadable checkpoint" in caplog.text
    assert fresh.det.dump_tenant("t1") is None and fresh.cp.known("t1")
    fresh.batch(10_000, [e for e in events[300:400] if e.tenant_id == "t1"])  # still works
    assert fresh.det.dump_tenant("t1") is not None


def test_already_learned_and_forget_partitions(tmp_path):
    cp = Checkpoints([], str(tmp_path))
    assert not cp.already_learned("a", (0, 0))            # unknown tenant: learn
    cp.restore("a", None)
    assert not cp.already_learned("a", (0, 0))

    class E:
        def __init__(self, tenant, partition, position):
            self.tenant_id, self.extra = tenant, {"pos": (partition, position)}
            self.ts_ms = 1_767_225_600_000
    cp.touched([E("a", 0, 5 << 16), E("a", 0, 7 << 16), E("b", 1, 3 << 16)])
    assert cp.already_learned("a", (0, 7 << 16)) and cp.already_learned("a", (0, 6 << 16))
    assert not cp.already_learned("a", (0, (7 << 16) + 1))
    assert cp.already_learned("b", (1, 3 << 16)) and not cp.already_learned("b", (1, 4 << 16))
    cp.forget_partitions({1})                 # b's partition went to another worker
    assert cp.known("a") and not cp.known("b")
    assert not cp.already_learned("b", (1, 3 << 16))    # restored from the table next time
    assert cp.already_learned("a", (0, 7 << 16))
    assert cp.tenants == 1
