"""Keyed input (``COVERWATCH_INPUT_KEYED=1``): the manual-assignment source
(:mod:`pipeline.stream.keyed`) on the real broker and the real embedded ClickHouse.

A simulated day goes to ``api-logs`` keyed by tenant; the worker is SIGKILLed right after a
ClickHouse insert (before that group's tenant states and offsets reach Kafka) and
restarted. Every event must be stored exactly once (raw rows, merges stopped, no FINAL),
the detector state must have counted every event across the kill, and the alerts must be
those of ``coverwatch replay`` on the same day.
"""
from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from pipeline.simulate.traffic import generate
from pipeline.stream.keyed import changelog_topic
from pipeline.testing.worker import WorkerProcess, isolated_settings, topic_partitions
from tests.conftest import make_worker, query, raw_counts
from tests.test_faults import paced_produce, stored

pytestmark = pytest.mark.integration
KEYED = {"COVERWATCH_INPUT_KEYED": "1", "COVERWATCH_TEST_STOP_MERGES": "1"}
CLEAR = 1.15   # a reference alert this far above its threshold fires in any delivery order


def day(tmp: Path) -> tuple[list[bytes], dict]:
    """A simulated day as raw JSON lines, and each tenant's first alert from
    ``coverwatch replay`` of the same lines (the CLI, as an analyst runs it)."""
    events, _ = generate(split="calib", seed=7, tenants=30, days=1, hydra_accounts=(20, 25))
    raw = [orjson.dumps(e) for e in events]
    path = tmp / "day.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(b"\n".join(raw) + b"\n")
    alerts_out = tmp / "replay-alerts.jsonl"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", str(path),
                           "--no-clickhouse", "--alerts-out", str(alerts_out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    first = {}
    for line in alerts_out.read_text().splitlines():
        a = orjson.loads(line)
        first.setdefault(a["tenant_id"], a)
    assert first, "replay raised no alert: the scenario would prove nothing"
    return raw, first


def test_keyed_sigkill_after_insert_stores_once_and_alerts_like_replay(kafka, tmp_path):
    raw, expected = day(tmp_path)
    events = [orjson.loads(m) for m in raw]
    marker = tmp_path / "killed-once"
    w = make_worker(kafka, tmp_path, COVERWATCH_TEST_GLOBALS_EVERY_S="0.2",
                    COVERWATCH_TEST_KILL_AFTER_ROWS=f"{len(raw) // 3}:{marker}",
                    **KEYED).start()
    s = w.settings
    t = paced_produce(s, raw, 30)
    try:
        deadline = time.monotonic() + 300
        while w.proc.poll() is None:
            assert time.monotonic() < deadline, f"the kill hook never fired\n{w.tail()}"
            time.sleep(0.2)
        assert marker.exists() and w.proc.returncode == -signal.SIGKILL
        killed_at, kill_ts = stored_offline(w)
        w.start()   # returns once the Faust group owns every table partition again
        w.wait_for_log("keyed input: reading")
        t.join()
        deadline = time.monotonic() + 300
        while stored(w) < len(raw):
            assert time.monotonic() < deadline, f"only {stored(w)} stored\n{w.tail()}"
            time.sleep(1)
        time.sleep(3)   # stragglers (a duplicate would land now)
        c = raw_counts(lambda sql: query(w, sql))
        fired = query(w, "SELECT tenant_id, toUnixTimestamp64Milli(ts), events_seen "
                         "FROM coverwatch.alerts FINAL WHERE length(related_tenants) = 0")
        alerted = {r[0] for r in query(w, "SELECT DISTINCT tenant_id FROM coverwatch.alerts")}
        committed = committed_offsets(s)
    finally:
        w.stop(signal.SIGKILL)
    # exactly once, raw rows (merges stopped: nothing collapsed them)
    assert c["merged_parts"] == 0, c
    assert c["events"] == len(raw) and c["event_rows"] == len(raw), c
    assert c["duplicates"] == 0, c
    # the restarted worker resumed from its own group's commits and committed everything
    assert sum(committed.values()) == len(raw), committed
    # the alerts of replay on the same day: every clear one, and at least 85% of all
    clear = {t for t, a in expected.items() if a["score"] >= CLEAR * a["threshold"]}
    assert clear <= alerted, sorted(clear - alerted)
    assert len(set(expected) & alerted) >= 0.85 * len(expected), sorted(set(expected) - alerted)
    # state restored, not lost: when an alert fired, its tenant's state had counted every
    # one of the tenant's events up to then (a group stored and committed but whose states
    # never reached the table counts fewer), and some alerted tenants straddle the kill
    assert 0 < killed_at < len(raw), killed_at
    straddling = 0
    for tenant, ts, seen in fired:
        mine = [e["ts"] for e in events if e["tenant_id"] == tenant]
        upto = sum(1 for x in mine if x <= ts)
        assert seen >= upto, (tenant, seen, upto)
        straddling += mine[0] < kill_ts < ts
    assert straddling >= 1, "no alert straddles the kill: the state check proved nothing"


def stored_offline(w) -> tuple[int, int]:
    """Distinct events stored and their latest event time (ms), read from the killed
    worker's engine by a short-lived process (its /query is gone with it)."""
    code = ("import sys, clickhouse_connect as c; r = c.get_client(dsn=sys.argv[1]).query("
            "'SELECT uniqExact(tenant_id, event_id), toUnixTimestamp64Milli(max(ts)) "
            "FROM coverwatch.events').result_rows[0]; print(r[0], r[1])")
    out = subprocess.run([sys.executable, "-c", code, w.settings.clickhouse_dsn],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    n, ts = out.stdout.strip().splitlines()[-1].split()
    return int(n), int(ts)


def committed_offsets(s) -> dict[int, int]:
    """The ``<app_id>-keyed`` group's committed offsets on ``api-logs``."""
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.kafka_options import kafka_python_options
    c = KafkaConsumer(**kafka_python_options(s), group_id=f"{s.app_id}-keyed",
                      enable_auto_commit=False)
    try:
        return {p: c.committed(TopicPartition(s.topic_logs, p)) or 0
                for p in range(s.partitions)}
    finally:
        c.close()


def test_keyed_refuses_to_start_when_partition_counts_differ(kafka, tmp_path):
    s = isolated_settings(kafka.bootstrap, tmp_path, partitions=4)
    topics = topic_partitions(s)
    topics[s.topic_logs] = 3
    kafka.create_topics(topics)
    w = WorkerProcess(s, tmp_path, **KEYED)
    with pytest.raises(RuntimeError) as exc:
        w.start(timeout=120)
    assert (f"topic {s.topic_logs} has 3 partitions but the tenant-state changelog "
            f"{changelog_topic(s)} has 4") in str(exc.value)
