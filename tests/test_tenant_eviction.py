"""Bounded tenant state: idle tenants expire, the least recent beyond the ceiling wait in the
table (on disk, out of the process's memory), and a tenant evicted and restored scores exactly
as one that stayed in memory."""
from __future__ import annotations

import pytest

from pipeline.contracts.events import Event, validate
from pipeline.detect.burst import BurstDetector
from pipeline.process import Processor, make_detector
from pipeline.simulate.traffic import generate
from pipeline.stream.state import Checkpoints

DAY = 86_400_000


def run(events: list[Event], max_tenants: int, idle_ms: int = 30 * DAY, batch: int = 300):
    """The worker's detect loop in one process: evict between batches, restore unknown
    tenants from the table, checkpoint touched tenants into it."""
    detector = make_detector("coverwatch")
    processor = Processor(detector)
    cp = Checkpoints([detector], "/nonexistent", idle_ms=idle_ms, max_tenants=max_tenants)
    table: dict[str, bytes] = {}
    alerts, peak = [], 0
    for start in range(0, len(events), batch):
        for tenant in cp.evict():
            table.pop(tenant, None)
        peak = max(peak, detector.tenants)   # live tenants between batches
        todo = []
        for n, e in enumerate(events[start:start + batch], start):
            if not cp.known(e.tenant_id):
                cp.restore(e.tenant_id, table.get(e.tenant_id), e.ts_ms)
            e.extra["pos"] = (0, n)
            if not cp.already_learned(e.tenant_id, e.extra["pos"]):
                todo.append(e)
        kept, scored, found = processor.process(todo)
        alerts += [(a.alert_id, a.events_seen, a.severity) for a in found]
        for tenant, pos in cp.touched(kept):
            table[tenant] = cp.encode(tenant, pos[1])
    return alerts, peak, cp


def test_eviction_to_the_table_changes_no_alert():
    raw, _ = generate(split="calib", seed=11, tenants=24, days=1, hydra_accounts=(20, 22))
    fresh = lambda: [validate(r, embedding_dim=None) for r in raw]  # noqa: E731
    want, peak_all, _ = run(fresh(), max_tenants=10**9)
    got, peak, cp = run(fresh(), max_tenants=8)
    assert want, "no alert: the comparison would be empty"
    assert got == want
    assert peak_all > 30 and peak <= 8 and cp.evicted > 0


def test_events_redelivered_after_a_restart_expire_nobody():
    t0 = 1767225600000
    table = {}

    def worker():
        det = BurstDetector()
        return det, Checkpoints([det], "/nonexistent", idle_ms=DAY, max_tenants=100)

    def deliver(det, cp, tenant, ts, n):
        e = Event(f"{tenant}-{n}", ts, tenant)
        e.extra["pos"] = (0, n)
        if not cp.known(tenant):
            cp.restore(tenant, table.get(tenant), ts)
        if not cp.already_learned(tenant, e.extra["pos"]):
            det.update(e)
            for t, pos in cp.touched([e]):
                table[t] = cp.encode(t, pos[1])

    det, cp = worker()
    deliver(det, cp, "a", t0, 1)
    deliver(det, cp, "b", t0, 2)
    det, cp = worker()                       # SIGKILL: a new worker, state from the table
    deliver(det, cp, "a", t0, 1)             # re-delivered, already learned: skipped
    deliver(det, cp, "b", t0, 2)
    deliver(det, cp, "c", t0 + 3_600_000, 3)
    assert cp.evict() == [] and det.dump_tenant("a") is not None


def test_idle_tenants_expire_and_come_back_fresh():
    det = BurstDetector()
    cp = Checkpoints([det], "/nonexistent", idle_ms=DAY, max_tenants=100)
    t0 = 1767225600000

    def send(tenant, ts, n):
        e = Event(f"{tenant}-{n}", ts, tenant)
        e.extra["pos"] = (0, n)
        det.update(e)
        cp.touched([e])

    send("old", t0, 1)
    send("busy", t0 + DAY // 2, 2)
    assert cp.evict() == []
    send("busy", t0 + DAY + 1, 3)
    assert cp.evict() == ["old"]
    assert det.dump_tenant("old") is None and not cp.known("old")
    assert det.dump_tenant("busy") is not None and cp.known("busy")
    assert cp.expired == 1


@pytest.mark.integration
def test_the_worker_expires_idle_tenants_and_caps_live_ones(kafka, tmp_path):
    import signal

    import orjson
    from kafka import KafkaProducer

    from pipeline.kafka_options import kafka_python_options
    from tests.conftest import make_worker
    w = make_worker(kafka, tmp_path, COVERWATCH_DETECTOR="burst", COVERWATCH_EMBEDDER="none",
                    COVERWATCH_MAX_TENANTS="5", COVERWATCH_TENANT_IDLE_HOURS="1").start()
    t0 = 1767225600000
    try:
        p = KafkaProducer(**kafka_python_options(w.settings))

        def send(tenant: str, ts: int, n: int) -> None:
            p.send(w.settings.topic_logs, orjson.dumps(
                {"event_id": f"{tenant}-{n}", "ts": ts, "tenant_id": tenant}))
            p.flush()
        for i in range(30):
            send(f"early-{i}", t0 + i, i)
        w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= 30)
        send("late", t0 + 2 * 3_600_000, 0)   # two hours of event time later
        w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= 31)
        send("later", t0 + 2 * 3_600_000 + 1, 0)   # the next batch runs the eviction
        # five early tenants are live when "late" arrives; one leaves to make room for it
        # (evicted: it is not idle yet in event time), the other four expire at "later"
        w.wait_for(lambda m: m.get("coverwatch_tenants_expired_total", 0) >= 4,
                   what="idle tenants expired")
        m = w.metrics()
        assert m["coverwatch_tenants_evicted_total"] + m["coverwatch_tenants_expired_total"] >= 25
        assert m["coverwatch_tenants_tracked"] <= 5 + 2
        assert "Traceback" not in w.tail(400)
        p.close()
    finally:
        w.stop(signal.SIGKILL)


def test_a_batch_of_new_tenants_stays_under_the_ceiling(tmp_path):
    """Eviction makes room for the tenants a batch brings, before it runs: a long-tail batch
    of 200 new tenants onto 300 live ones under a ceiling of 300 leaves 300 live, not 500
    (the worker's batches carry thousands of tenants: tests/test_faults_tenants.py)."""
    from pipeline import build
    from pipeline.bench.tenant_memory import tenant_events
    from pipeline.settings import Settings
    from pipeline.stream.batch import BatchCore
    from pipeline.testing.batches import messages
    s = Settings(embedder="hashing", embedding_dim=384)
    processor, _ = build.processor(s, stage_here=False)
    cp = build.checkpoints(Settings(data_dir=str(tmp_path), max_tenants=300), processor)
    table: dict[bytes, bytes] = {}
    core = BatchCore(processor, cp, table.get, "coverwatch-events")
    offset = 0
    for first, n in ((0, 300), (300, 200)):
        records = messages(tenant_events(first, n, 1), per_message=100, start=offset)
        offset += len(records)
        d = core.run(records)
        table.update((k, v) for k, v in d.states if v is not None)
        assert cp.tenants <= 300, (first, cp.tenants)
    assert cp.evicted == 200


def test_evicted_tenants_leave_process_memory(tmp_path):
    """Past the ceiling each new tenant must cost the process far less than its checkpoint:
    the evicted ones' state is on disk (the worker's RocksDB table store), not in the heap.
    The same run over a dict table (what Faust's ``memory://`` holds) is the control: there
    every evicted tenant keeps its checkpoint bytes, and the measurement must see them."""
    from pipeline.bench.tenant_memory import measure
    kw = dict(tenants=6000, max_tenants=1000, batch=500, samples=6, workdir=str(tmp_path))
    disk = measure(store="rocksdb", **kw)
    assert disk["tenants_evicted"] >= 4000 and disk["tenants_live_at_end"] <= 1500
    checkpoint = disk["checkpoint_bytes_per_tenant"]
    assert checkpoint > 3000, "tenant checkpoints were not written to the table"
    assert disk["bytes_per_tenant_past_the_ceiling"]["heap"] < checkpoint / 8
    memory = measure(store="memory", **kw)
    assert memory["bytes_per_tenant_past_the_ceiling"]["heap"] > checkpoint * 0.8


@pytest.mark.integration
def test_the_worker_keeps_evicted_tenants_on_disk_in_their_partition(kafka, tmp_path):
    """A live worker with a ceiling of 5: every tenant's checkpoint is in the RocksDB database
    of the changelog partition its key hashes to (a batch mixes partitions; a state filed
    under another one would be read back stale after that partition's recovery)."""
    import signal

    import orjson
    from kafka import KafkaProducer
    from rocksdict import Options, Rdict

    from pipeline.kafka_options import kafka_python_options
    from pipeline.stream.codec import key_partition
    from tests.conftest import make_worker
    w = make_worker(kafka, tmp_path, COVERWATCH_DETECTOR="burst", COVERWATCH_EMBEDDER="none",
                    COVERWATCH_MAX_TENANTS="5").start()
    t0, n = 1767225600000, 60
    try:
        p = KafkaProducer(**kafka_python_options(w.settings))
        for i in range(n + 1):
            p.send(w.settings.topic_logs, orjson.dumps(
                {"event_id": f"e{i}", "ts": t0 + i, "tenant_id": f"t-{i}"}))
            if i == n - 1:   # the last one in a later batch, which evicts
                p.flush()
                w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= n)
        p.flush()
        p.close()
        w.wait_for(lambda m: m.get("coverwatch_tenants_evicted_total", 0) >= n - 5,
                   what="tenants beyond the ceiling evicted")
        assert w.metrics()["coverwatch_tenants_tracked"] <= 5 + 1
    finally:
        w.stop(signal.SIGTERM)
    found: dict[bytes, int] = {}
    tables = tmp_path / "worker" / "v1" / "tables"
    for part in range(w.settings.partitions):
        db = Rdict(str(tables / f"tenant-state-{part}.db"), options=Options(raw_mode=True))
        found.update((k, part) for k in db.keys() if not k.startswith(b"__faust"))
        db.close()
    assert set(found) == {f"t-{i}".encode() for i in range(n + 1)}
    misplaced = {k: p for k, p in found.items() if key_partition(k, w.settings.partitions) != p}
    assert not misplaced
