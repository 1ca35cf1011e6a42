"""``coverwatch worker --processes 2``: two worker processes of one app, one consumer group.

A real broker, the real supervisor (``COVERWATCH_PROCESSES=2`` through the CLI) and each
child's own embedded ClickHouse. A simulated day with attacking tenants spread over four
partitions: every event stored exactly once across the two engines (raw rows, merges
stopped), every tenant in one engine only, both children assigned partitions, every
expected alert (from ``replay`` of the same stream) raised, and SIGTERM to the supervisor
stops both children.
"""
from __future__ import annotations

import gzip
import os
import re
import signal
import time
from dataclasses import replace

import orjson
import pytest

from pipeline.replay import replay
from pipeline.settings import Settings
from pipeline.simulate.traffic import generate
from pipeline.stream.supervisor import child_settings
from pipeline.testing.worker import WorkerProcess
from tests.conftest import make_worker, raw_counts
from tests.test_faults import assert_alerted, paced_produce

pytestmark = pytest.mark.integration
HOOKS = {"COVERWATCH_TEST_STOP_MERGES": "1"}


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """A simulated day (benign tenants, attackers, a hydra campaign) and replay's alerts."""
    tmp = tmp_path_factory.mktemp("day")
    events, _ = generate(split="calib", seed=7, tenants=30, days=1, hydra_accounts=(20, 25))
    raw = [orjson.dumps(e) for e in events]
    path = tmp / "day.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(b"\n".join(raw) + b"\n")
    ref = replay([path], Settings(clickhouse_dsn=f"chdb://{tmp / 'ref'}"), clickhouse=False)
    first = {}
    for a in ref.alerts:
        first.setdefault(a.tenant_id, a)
    assert first, "the reference replay raised no alert: the test would prove nothing"
    return raw, first


def child_handle(w: WorkerProcess, i: int) -> WorkerProcess:
    """A handle on child ``i`` of a supervised worker (its web port), for queries."""
    return WorkerProcess(child_settings(w.settings, i), w.log.parent, name=f"child{i}")


def wait(cond, timeout: float, what: str, w: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert w.alive(), f"supervisor exited:\n{w.tail()}"
        try:
            if cond():
                return
        except (OSError, RuntimeError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{what}\n{w.group_members()}\n{w.tail(80)}")


def both_assigned(w: WorkerProcess) -> bool:
    """Every consumer group: stable, two members, each with partitions, all covered; and
    both children finished Faust's start-up."""
    groups = w.group_members()
    for group in w.groups():
        g = groups.get(group) or {}
        members = g.get("members") or {}
        if g.get("state") != "Stable" or len(members) != 2:
            return False
        if not all(members.values()):
            return False
        if {p for ps in members.values() for p in ps} != set(range(w.settings.partitions)):
            return False
    ready = re.findall(r"\[(\d+)\] \[INFO\] \[\^-*Recovery\]: Worker ready",
                       w.log_since_start())
    return len(set(ready)) >= 2   # both children (the log lines carry their pids)


def test_two_processes_store_once_and_alert(kafka, tmp_path, day):
    raw, expected = day
    w = make_worker(kafka, tmp_path, COVERWATCH_PROCESSES="2",
                    COVERWATCH_TEST_GLOBALS_EVERY_S="0.5", **HOOKS)
    w.start(wait_assigned=False)
    children = [child_handle(w, i) for i in range(2)]
    try:
        wait(lambda: both_assigned(w), 180, "two children not both assigned", w)
        pids = [int(p) for p in re.findall(r"started worker process \d+/2, pid (\d+)",
                                           w.log_since_start())]
        assert len(pids) == 2, w.tail()
        t = paced_produce(w.settings, raw, 30)
        t.join()

        def stored() -> int:
            return sum(int(c.query("SELECT uniqExact(tenant_id, event_id) "
                                   "FROM coverwatch.events")[0][0]) for c in children)
        wait(lambda: stored() >= len(raw), 300, f"not every event stored ({len(raw)})", w)
        time.sleep(3)   # stragglers: a duplicate would land now
        per = [raw_counts(c.query) for c in children]
        for c in per:
            assert c["merged_parts"] == 0, "a merge ran: raw counts would hide duplicates"
            assert c["duplicates"] == 0 and c["max_rows_per_event"] == 1, per
        assert sum(c["event_rows"] for c in per) == len(raw), per
        # each tenant lives in exactly one process: its rows in that child's engine only
        tenants = [{r[0] for r in c.query("SELECT DISTINCT tenant_id FROM coverwatch.events")}
                   for c in children]
        assert all(tenants), ("a child stored nothing", [len(x) for x in tenants])
        assert not tenants[0] & tenants[1], sorted(tenants[0] & tenants[1])
        alerted = set()
        for c in children:
            alerted |= {r[0] for r in c.query(
                "SELECT DISTINCT tenant_id FROM coverwatch.alerts FINAL")}
        assert_alerted(expected, alerted, [len(x) for x in tenants])
        # SIGTERM to the supervisor reaches both children, and it exits cleanly
        w.stop(signal.SIGTERM, timeout=90)
        assert w.proc.returncode == 0, w.tail(80)
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        w.stop(signal.SIGKILL)


def test_child_settings_split_port_data_and_engine(tmp_path):
    s = Settings(web_port=7000, data_dir=str(tmp_path / "d"),
                 clickhouse_dsn=f"chdb://{tmp_path / 'ch'}", processes=3)
    c = child_settings(s, 2)
    assert (c.web_port, c.data_dir, c.clickhouse_dsn, c.processes) == (
        7002, str(tmp_path / "d" / "p2"), f"chdb://{tmp_path / 'ch' / 'p2'}", 1)
    server = replace(s, clickhouse_dsn="http://u:p@ch:8123/db")
    assert child_settings(server, 1).clickhouse_dsn == "http://u:p@ch:8123/db"
