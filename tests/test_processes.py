"""``coverwatch worker --processes 2``: two worker processes of one app, one consumer group.

A real broker, the real supervisor (``COVERWATCH_PROCESSES=2`` through the CLI) and each
child's own embedded ClickHouse. A simulated day with attacking tenants spread over four
partitions: every event stored exactly once across the two engines (raw rows, merges
stopped), every tenant in one engine only, both children assigned partitions, every
expected alert (from ``replay`` of the same stream) raised, and SIGTERM to the supervisor
stops both children.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import replace

import pytest

from pipeline.settings import Settings
from pipeline.stream.supervisor import child_settings
from pipeline.testing.worker import WorkerProcess
from tests.conftest import make_worker, raw_counts
from tests.test_faults import assert_alerted, paced_produce, simulated_day

pytestmark = pytest.mark.integration
HOOKS = {"COVERWATCH_TEST_STOP_MERGES": "1"}


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    return simulated_day(tmp_path_factory.mktemp("day"))


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


def _fake_workers(monkeypatch, tmp_path, behaviour):
    """Children run ``behaviour(i)`` instead of the Faust worker (inherited through fork)."""
    from pipeline.stream import app

    def run_worker(settings, loglevel="info"):
        i = settings.web_port - 7000
        (tmp_path / f"pid{i}.tmp").write_text(str(os.getpid()))
        (tmp_path / f"pid{i}.tmp").rename(tmp_path / f"pid{i}")
        behaviour(settings.web_port - 7000)
    monkeypatch.setattr(app, "run_worker", run_worker)
    return Settings(web_port=7000, data_dir=str(tmp_path / "d"),
                    clickhouse_dsn=f"chdb://{tmp_path / 'ch'}", processes=2)


def assert_reaped(tmp_path) -> None:
    """Both children ended and were waited for by the supervisor."""
    for i in range(2):
        with pytest.raises(ChildProcessError):
            os.waitpid(int((tmp_path / f"pid{i}").read_text()), os.WNOHANG)


@pytest.fixture
def restore_signals():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_child_exiting_stops_the_others_and_the_supervisor_fails(monkeypatch, tmp_path,
                                                                   restore_signals):
    from pipeline.stream.supervisor import supervise

    def behaviour(i):
        if i == 0:
            while not (tmp_path / "pid1").exists():   # once child 1 runs,
                time.sleep(0.05)
            raise SystemExit(3)      # child 0 dies on its own
        time.sleep(120)              # child 1 would run on: the supervisor must stop it
    s = _fake_workers(monkeypatch, tmp_path, behaviour)
    t0 = time.monotonic()
    assert supervise(s) == 3
    assert time.monotonic() - t0 < 30
    assert_reaped(tmp_path)


def test_sigterm_is_forwarded_and_the_supervisor_waits(monkeypatch, tmp_path, restore_signals):
    import threading

    from pipeline.stream.supervisor import supervise

    def behaviour(i):
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        (tmp_path / f"ready{i}").write_text("ok")
        while not stop:
            time.sleep(0.05)
        time.sleep(0.3)              # a graceful stop takes a moment: it is waited for
        (tmp_path / f"stopped{i}").write_text("ok")
    s = _fake_workers(monkeypatch, tmp_path, behaviour)

    def term():
        deadline = time.monotonic() + 20
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        if returned.wait(20):
            return
        for i in range(2):   # not forwarded: end the children so the test fails, not hangs
            with contextlib.suppress(ProcessLookupError):
                os.kill(int((tmp_path / f"pid{i}").read_text()), signal.SIGKILL)
    returned = threading.Event()
    threading.Thread(target=term, daemon=True).start()
    code = supervise(s)
    returned.set()
    assert code == 0
    assert all((tmp_path / f"stopped{i}").exists() for i in range(2))
    assert_reaped(tmp_path)
