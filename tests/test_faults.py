"""Reliability: crashes, outages and hostile input, with nothing lost and nothing doubled.

Each scenario runs the real worker against a real broker (its own, so a stopped broker
disturbs no other test) and the real embedded ClickHouse, and records its counts into
bench/results/faults.json (`make test-faults`). The expected alerts come from `replay` of
the very same stream: the worker must alert on every tenant the offline run alerts on.
"""
from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from pipeline.kafka_io import producer, tenant_key
from pipeline.replay import replay
from pipeline.settings import Settings
from pipeline.simulate.traffic import generate
from pipeline.stream.repartition import DLQ_ORIGINAL_MAX

from pipeline.testing.evidence import Evidence
from pipeline.testing.lost import where_lost
from pipeline.testing.worker import status_kb
from tests.conftest import consume_all, make_worker, query, raw_counts

pytestmark = [pytest.mark.integration, pytest.mark.faults]
RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "faults.json"
EVIDENCE = Evidence(RESULTS)
# every worker here runs with background merges stopped: raw rows show every duplicate
HOOKS = {"COVERWATCH_TEST_STOP_MERGES": "1"}


def recording_broker(request, evidence: Evidence):
    """A broker for one module's scenarios, then their evidence written: only passing
    scenarios were recorded (record() is each test's last statement), and nothing at all is
    written when any test of this run failed."""
    from pipeline.testing.kafka import KafkaBroker
    failed_before = request.session.testsfailed
    broker = KafkaBroker()
    broker.start()
    yield broker
    broker.stop()
    evidence.write(failed=request.session.testsfailed > failed_before)


@pytest.fixture(scope="module")
def fault_kafka(request):
    yield from recording_broker(request, EVIDENCE)


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    return simulated_day(tmp_path_factory.mktemp("stream"))


def simulated_day(tmp: Path) -> tuple[list[bytes], dict]:
    """A simulated day (benign tenants, attackers, a hydra campaign) as raw JSON lines, and
    each tenant's first alert when ``replay`` runs the same day from a file."""
    events, _ = generate(split="calib", seed=7, tenants=30, days=1, hydra_accounts=(20, 25))
    raw = [orjson.dumps(e) for e in events]
    path = tmp / "day.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(b"\n".join(raw) + b"\n")
    ref = replay([path], Settings(clickhouse_dsn=f"chdb://{tmp / 'ref'}"), clickhouse=False)
    first_alert = {}
    for a in ref.alerts:
        first_alert.setdefault(a.tenant_id, a)
    assert first_alert, "the reference replay raised no alert: the scenario would prove nothing"
    return raw, first_alert


# A reference alert this far above its threshold is raised whatever the delivery order.
# Closer to it, the alert is decided by the population as it stands at that window, which
# depends on how the worker's partitions interleave (replay reads one ordered file): in a
# 30-tenant day most first windows are scored while the population warms.
CLEAR = 1.15


def assert_alerted(expected: dict, alerted, context=None) -> None:
    """Every clear reference alert is raised, and at least 85% of all of them."""
    alerted = set(alerted)
    clear = {t for t, a in expected.items() if a.score >= CLEAR * a.threshold}
    assert clear <= alerted, (sorted(clear - alerted), context)
    assert len(set(expected) & alerted) >= 0.85 * len(expected), (
        sorted(set(expected) - alerted), context)


def paced_produce(settings: Settings, msgs: list[bytes], seconds: float,
                  on_progress=None) -> threading.Thread:
    """Produce ``msgs`` in order over about ``seconds``, calling on_progress(fraction)."""
    def run():
        p = producer(settings)
        step = max(1, len(msgs) // 200)
        t0 = time.monotonic()
        for i in range(0, len(msgs), step):
            for m in msgs[i:i + step]:
                p.send(settings.topic_logs, value=m, key=tenant_key(m))
            if on_progress:
                on_progress(min(1.0, (i + step) / len(msgs)))
            delay = t0 + seconds * (i + step) / len(msgs) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        p.flush()
        p.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def counts(w) -> dict:
    """Raw rows (no FINAL; merges stopped in the worker) and the alerted tenants."""
    c = raw_counts(lambda sql: query(w, sql))
    assert c["merged_parts"] == 0, "a merge ran: raw counts would hide collapsed duplicates"
    c["alerted"] = {r[0]: r[1] for r in query(
        w, "SELECT tenant_id, min(events_seen) FROM coverwatch.alerts FINAL GROUP BY 1")}
    return c


def record(name: str, produced: int, c: dict, expected: dict, **extra) -> None:
    """Keep a scenario's figures for faults.json: call it after the scenario's asserts."""
    EVIDENCE.record(name, {
        "events_produced": produced, "events_in_clickhouse": c["events"],
        "event_rows_raw": c["event_rows"], "alert_rows_raw": c["alert_rows"],
        "duplicates": c["duplicates"], "alerts_expected": len(expected),
        "alerts_found": len(set(expected) & set(c["alerted"])), **extra})


def wait_processed(w, n: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            (got,), = query(w, "SELECT uniqExact(event_id) FROM coverwatch.events")
            if got >= n:
                return
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"only {got} of {n} events stored\n{w.tail()}")


def settle(w, raw: list[bytes], kill_ts: list[int] = (), timeout: float = 300) -> dict:
    """Wait until every event of ``raw`` is stored, let stragglers land, then count; on a
    timeout, say which events were lost and where."""
    try:
        wait_processed(w, len(raw), timeout=timeout)
    except TimeoutError as exc:
        raise TimeoutError(f"{lost_report(w, raw, kill_ts)}\n{exc}") from None
    time.sleep(3)
    return counts(w)


def problems(w) -> list[str]:
    """The worker log's errors and detector failures (what to read when an alert is missing)."""
    return [line[:300] for line in w.log.read_text(errors="replace").splitlines()
            if "ERROR" in line or "detector failed" in line or "Traceback" in line][:40]


def stored(w) -> int:
    """Distinct events the worker has stored so far (-1 while it does not answer)."""
    try:
        (n,), = query(w, "SELECT uniqExact(tenant_id, event_id) FROM coverwatch.events")
        return int(n)
    except (OSError, RuntimeError):
        return -1


def lost_report(w, raw: list[bytes], kill_ts: list[int] = ()) -> str:
    """Which events were never stored, by tenant, against the kills, where each hop left
    them (:func:`pipeline.testing.lost.where_lost`), and the worker's drop counters: what
    to read first when a scenario loses events."""
    events = [orjson.loads(m) for m in raw]
    have = {e for (e,) in query(w, "SELECT DISTINCT event_id FROM coverwatch.events")}
    gone = [e for e in events if e["event_id"] not in have]
    try:
        m = w.metrics()
        counters = {k: m.get(f"coverwatch_{k}_total") for k in (
            "events_in", "events_detected", "duplicates", "redelivered_skipped",
            "redelivered_stored", "partition_rewinds")}
    except OSError as exc:
        counters = {"metrics": repr(exc)}
    by_tenant = Counter(e["tenant_id"] for e in gone)
    lines = [f"{len(gone)} events never stored; kills after event times {kill_ts}"]
    for tenant, n in by_tenant.most_common(12):
        mine = [e["ts"] for e in events if e["tenant_id"] == tenant]
        lost = sorted(e["ts"] for e in gone if e["tenant_id"] == tenant)
        lines.append(f"  {tenant}: {n} of {len(mine)} lost, event times {lost[0]}..{lost[-1]}, "
                     f"kills before the first lost: {sum(k < lost[0] for k in kill_ts)}")
    lines.append(f"worker counters (this process): {counters}")
    lines.append(where_lost(w.settings, {e["event_id"] for e in gone}))
    return "\n".join(lines)


@contextlib.contextmanager
def cpu_hog():
    """A process spinning on one core beside the worker (ended by its own pid)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield hog
    finally:
        hog.kill()
        hog.wait()


def sigkill_scenario(fault_kafka, tmp_path, stream, name: str, **extra) -> None:
    """Three SIGKILLs at 30, 60 and 85 % of the events stored; everything stored once (raw
    rows), every expected alert raised, detector state restored across the kills."""
    raw, expected = stream
    events = [orjson.loads(m) for m in raw]
    # a day in 40 s: the population is saved every 0.2 s (5 s here would be 3 hours of traffic)
    w = make_worker(fault_kafka, tmp_path, COVERWATCH_TEST_GLOBALS_EVERY_S="0.2",
                    **HOOKS).start()
    t = paced_produce(w.settings, raw, 40)
    kill_ts, kill_stored = [], []
    try:
        # kill points follow the worker's progress (events it stored), not the producer's:
        # each kill lands mid-stream of what the worker has actually done
        for at in (0.3, 0.6, 0.85):
            deadline = time.monotonic() + 240
            while stored(w) < at * len(raw):
                assert time.monotonic() < deadline, f"worker stuck at {stored(w)}\n{w.tail()}"
                time.sleep(0.2)
            (last_ts,), = query(w, "SELECT toUnixTimestamp64Milli(max(ts)) "
                                   "FROM coverwatch.events")
            kill_ts.append(int(last_ts))
            kill_stored.append(stored(w))
            w.stop(signal.SIGKILL)
            w.start()    # returns once the new consumers own every partition again
        t.join()
        c = settle(w, raw, kill_ts)
        fired = query(w, "SELECT tenant_id, toUnixTimestamp64Milli(ts), events_seen "
                         "FROM coverwatch.alerts FINAL WHERE length(related_tenants) = 0")
    finally:
        w.stop(signal.SIGKILL)
    assert all(0 < k < len(raw) for k in kill_stored), kill_stored
    # Raw rows, exactly once: a batch stored but not committed when the worker died is
    # delivered again in other batches (other dedup tokens); the redelivery guard leaves its
    # stored events out (tests/test_redelivery.py, and the fresh-data-dir scenario below,
    # which kills right after an insert)
    assert c["events"] == len(raw) and c["event_rows"] == len(raw), c
    assert c["duplicates"] == 0, c
    assert_alerted(expected, c["alerted"], (c, problems(w)))
    # Detector state was restored, not restarted: when an alert fired, the tenant's state had
    # counted every one of its events up to then, across the kills (a lost state would count
    # fewer). At least one alert must come from a tenant whose history straddles a kill.
    straddling = 0
    for tenant, ts, seen in fired:
        mine = [e["ts"] for e in events if e["tenant_id"] == tenant]
        upto = sum(1 for x in mine if x <= ts)
        assert seen >= upto, (tenant, seen, upto)
        straddling += any(mine[0] < k < ts for k in kill_ts)
    assert straddling >= 1
    record(name, len(raw), c, expected, kills=len(kill_ts), killed_at_stored=kill_stored,
           **extra)


def test_worker_sigkill_restarts(fault_kafka, tmp_path, stream):
    sigkill_scenario(fault_kafka, tmp_path, stream, "worker_sigkill")


def test_sigkill_under_cpu_load(fault_kafka, tmp_path, stream):
    """The same kills with a process spinning on one of the machine's cores."""
    with cpu_hog():
        sigkill_scenario(fault_kafka, tmp_path, stream, "worker_sigkill_cpu_load", cpu_hog=1)


def test_restart_on_a_fresh_data_dir(fault_kafka, tmp_path, stream):
    """SIGKILL right after an insert landed (before that batch's state and offsets reached
    Kafka), then a restart on an empty data directory, as on another machine: the global
    models come back from the checkpoint topic, the re-delivered stored events are not
    stored again, and every expected alert is still raised."""
    raw, expected = stream
    marker = tmp_path / "killed-once"
    w = make_worker(fault_kafka, tmp_path, COVERWATCH_TEST_GLOBALS_EVERY_S="0.2",
                    COVERWATCH_TEST_KILL_AFTER_ROWS=f"{len(raw) // 3}:{marker}", **HOOKS).start()
    t = paced_produce(w.settings, raw, 40)
    try:
        deadline = time.monotonic() + 240
        while w.proc.poll() is None:
            assert time.monotonic() < deadline, f"the kill hook never fired\n{w.tail()}"
            time.sleep(0.2)
        assert marker.exists() and w.proc.returncode == -signal.SIGKILL
        killed_at = stored_offline(w)
        old_dir = Path(w.settings.data_dir)
        assert (old_dir / "population.bin").exists()
        fresh = tmp_path / "fresh-worker-dir"
        w.settings = replace(w.settings, data_dir=str(fresh))
        w.env["COVERWATCH_DATA_DIR"] = str(fresh)
        w.start()
        restored = [line for line in w.log_since_start().splitlines()
                    if "restored CoverwatchDetector from topic" in line]
        t.join()
        c = settle(w, raw)
        left_out = w.metrics().get("coverwatch_redelivered_stored_total", 0)
    finally:
        w.stop(signal.SIGKILL)
    assert restored, "the population was not restored from the checkpoint topic"
    assert 0 < killed_at < len(raw), killed_at
    assert c["events"] == len(raw) and c["event_rows"] == len(raw), c
    assert c["duplicates"] == 0, c
    assert_alerted(expected, c["alerted"], (c, problems(w)))
    record("restart_fresh_data_dir", len(raw), c, expected, killed_at_stored=killed_at,
           population_restored_from="topic", redelivered_left_out=int(left_out))


def stored_offline(w) -> int:
    """Distinct events stored, read from the dead worker's engine by a short-lived process
    (the worker's own /query is gone with it)."""
    code = ("import sys, clickhouse_connect as c; "
            "print(c.get_client(dsn=sys.argv[1]).query("
            "'SELECT uniqExact(tenant_id, event_id) FROM coverwatch.events').result_rows[0][0])")
    out = subprocess.run([sys.executable, "-c", code, w.settings.clickhouse_dsn],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


HOSTILE_SQL = [
    "SELECT count() FROM numbers(10000000000000)",          # runs until the time limit
    "SELECT * FROM numbers(10000000)",                        # a 10M-row result
    "SELECT sleep(3)",
    "SELECT 1 INTO OUTFILE '{outfile}' TRUNCATE",
    "KILL QUERY WHERE 1",
    "SELECT * FROM system.parts",
    "INSERT INTO coverwatch.events (event_id) VALUES ('x')",
    "SELECT groupArray(number) FROM numbers(100000000)",     # memory
]


def test_hostile_queries_during_load(fault_kafka, tmp_path, stream):
    """While the day streams in, /query is flooded with what the issue's probe sent: long,
    huge, parallel, file-writing, query-killing and system-reading queries. Detection keeps
    going (/metrics shows progress during the attack), every event is stored once, every
    expected alert is raised, and no file is written."""
    raw, expected = stream
    outfile = tmp_path / "written-by-query.txt"
    w = make_worker(fault_kafka, tmp_path, COVERWATCH_QUERY_TIMEOUT_S="5", **HOOKS).start()
    t = paced_produce(w.settings, raw, 30)
    statuses: Counter = Counter()
    stop = threading.Event()

    def attacker(k: int) -> None:
        for i in range(40):                      # bounded in count and time
            if stop.is_set():
                return
            sql = HOSTILE_SQL[(k + i) % len(HOSTILE_SQL)].format(outfile=outfile)
            req = urllib.request.Request(f"{w.url}/query", data=orjson.dumps({"sql": sql}),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
                    statuses[r.status] += 1
            except urllib.error.HTTPError as exc:
                statuses[exc.code] += 1
            except OSError:
                statuses["io"] += 1
    attackers = [threading.Thread(target=attacker, args=(k,), daemon=True) for k in range(8)]
    progress = []
    try:
        w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) > 0, timeout=120,
                   what="first events detected")
        for a in attackers:
            a.start()
        t_end = time.monotonic() + 25
        while time.monotonic() < t_end and any(a.is_alive() for a in attackers):
            progress.append(w.detected())
            time.sleep(2.5)
        stop.set()
        for a in attackers:
            a.join(60)
        t.join()
        c = settle(w, raw)
    finally:
        stop.set()
        w.stop(signal.SIGKILL)
    seen = [p for p in progress if p >= 0]
    assert len(seen) >= 3 and seen[-1] > seen[0], ("no progress under attack", progress)
    assert sum(statuses.values()) > 0 and statuses[200] < sum(statuses.values()), statuses
    assert not outfile.exists(), "a query wrote a file"
    assert c["events"] == len(raw) and c["event_rows"] == len(raw), c
    assert c["duplicates"] == 0, c
    assert_alerted(expected, c["alerted"], (c, problems(w)))
    record("hostile_queries", len(raw), c, expected, queries_sent=sum(statuses.values()),
           queries_by_status={str(k): v for k, v in sorted(statuses.items(), key=str)},
           detected_during_attack=[seen[0], seen[-1]])


def test_broker_outage(fault_kafka, tmp_path, stream):
    raw, expected = stream
    w = make_worker(fault_kafka, tmp_path, **HOOKS).start()
    t = paced_produce(w.settings, raw[: len(raw) // 2], 10)
    try:
        t.join()
        time.sleep(2)
        fault_kafka.stop()
        time.sleep(30)
        fault_kafka.restart()
        t = paced_produce(w.settings, raw[len(raw) // 2:], 10)
        t.join()
        c = settle(w, raw)
    finally:
        w.stop(signal.SIGKILL)
    assert c["events"] == len(raw)
    assert c["duplicates"] == 0, c
    assert_alerted(expected, c["alerted"])
    record("broker_outage", len(raw), c, expected, outage_s=30)


def test_clickhouse_outage(fault_kafka, tmp_path, stream):
    raw, expected = stream
    fault = tmp_path / "clickhouse-down"
    w = make_worker(fault_kafka, tmp_path, COVERWATCH_FAULT_FILE=str(fault), **HOOKS).start()
    t = paced_produce(w.settings, raw[: len(raw) // 3], 5)
    t.join()
    wait_processed(w, len(raw) // 3)
    fault.touch()
    t = paced_produce(w.settings, raw[len(raw) // 3:], 20)
    behind, rss = 0.0, []
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end:
        behind = max(behind, w.metrics().get("coverwatch_sink_behind_seconds", 0.0))
        rss.append(status_kb(w.proc.pid) / 1024)
        time.sleep(2)
    fault.unlink()
    try:
        t.join()
        c = settle(w, raw)
    finally:
        w.stop(signal.SIGKILL)
    assert behind > 30, "the sink-behind metric did not show the outage"
    assert "clickhouse sink behind" in w.log.read_text()
    assert c["events"] == len(raw)
    assert c["duplicates"] == 0, c
    assert_alerted(expected, c["alerted"])
    assert max(rss) < 2_000, "memory grew without bound while the sink was down"
    record("clickhouse_outage", len(raw), c, expected, outage_s=60,
           max_sink_behind_s=round(behind, 1), max_rss_mb=max(rss))


# The DLQ reason each class of hostile_messages() must get (same order as its makers).
HOSTILE_REASONS = [
    "invalid_json",         # unbalanced braces
    "invalid_json",         # truncated object
    "not_object",           # a JSON array
    "wrong_type",           # event_id is a number
    "missing_field",        # tenant_id null
    "bad_timestamp",        # ts "not a time"
    "out_of_range",         # input_tokens 2**40
    "invalid_json",         # NaN
    "invalid_json",         # -Infinity
    "missing_field",        # 600 levels of nesting: parses, but is no event
    "not_utf8",             # invalid UTF-8 inside a string
    "not_utf8",             # binary garbage
    "embedding_dim",        # 1, 383, 385 or 1000 floats
    "embedding_value",      # strings as embedding values
    "out_of_range",         # 300-character tenant id
    "wrong_type",           # status "200 OK"
    "metadata_too_large",   # 20 KB metadata
    "invalid_json",         # a 400-digit number
    "invalid_json",         # empty message
]


def hostile_messages(rng: random.Random, n: int) -> list[bytes]:
    """Malformed and adversarial messages: every one must be rejected with a reason."""
    base = {"event_id": "h", "ts": 1772366400000, "tenant_id": "t"}
    makers = [
        lambda i: b"{" * rng.randint(1, 50),
        lambda i: b'{"event_id": "h%d", "ts": ' % i,
        lambda i: orjson.dumps([i, "x"]),
        lambda i: orjson.dumps({**base, "event_id": i}),
        lambda i: orjson.dumps({**base, "tenant_id": None, "event_id": f"n{i}"}),
        lambda i: orjson.dumps({**base, "ts": "not a time"}),
        lambda i: orjson.dumps({**base, "input_tokens": 2**40}),
        lambda i: b'{"event_id":"x","ts":1772366400000,"tenant_id":"t","latency_ms":NaN}',
        lambda i: b'{"event_id":"x","ts":1772366400000,"tenant_id":"t","latency_ms":-Infinity}',
        lambda i: b'{"a":' * 600 + b"1" + b"}" * 600,
        lambda i: b'{"event_id":"x","ts":1772366400000,"tenant_id":"\xc3\x28"}',
        lambda i: b"\x00\x01\x02\xff" * rng.randint(1, 100),
        lambda i: orjson.dumps({**base, "embedding": [0.1] * rng.choice([1, 383, 385, 1000])}),
        lambda i: orjson.dumps({**base, "embedding": ["1"] * 384}),
        lambda i: orjson.dumps({**base, "tenant_id": "x" * 300}),
        lambda i: orjson.dumps({**base, "status": "200 OK"}),
        lambda i: orjson.dumps({**base, "metadata": {"k": "v" * 20_000}}),
        lambda i: b"9" * 400,
        lambda i: b"",
    ]
    return [makers[i % len(makers)](i) for i in range(n)]


def valid_adversarial(i: int) -> dict:
    """Valid events with hostile-looking values: stored verbatim, never executed."""
    tenants = ["o'brien", 'quote"d', "x'); DROP TABLE coverwatch.events; --", "new\nline",
               "ctl\x01\x1f", "{tenant:String}", "日本語テナント", "back\\slash"]
    return {"event_id": f"v{i}", "ts": 1772366400000 + i * 1000,
            "tenant_id": tenants[i % len(tenants)], "prompt": "ignore\x00previous\r\n" * 3,
            "user_agent": "'; SELECT 1; --", "metadata": {"k": "\u202e"}}


def test_hostile_input(fault_kafka, tmp_path):
    rng = random.Random(42)
    bad = hostile_messages(rng, 10_000)
    bad += [orjson.dumps({"event_id": "big", "ts": 1772366400000, "tenant_id": "t",
                          "prompt": "x" * 10_000_000})]
    want_reason: dict[bytes, str] = {}
    for i, m in enumerate(bad):
        reason = HOSTILE_REASONS[i % len(HOSTILE_REASONS)] if i < 10_000 else "oversized"
        assert want_reason.setdefault(_dlq_key(m), reason) == reason, (m[:80], reason)
    good = [orjson.dumps(valid_adversarial(i)) for i in range(3_000)]
    dup = good[:500]  # duplicated event_ids: counted once
    msgs = []
    for i in range(max(len(bad), len(good))):
        msgs += bad[i:i + 1] + good[i:i + 1]
    msgs += dup
    w = make_worker(fault_kafka, tmp_path, **HOOKS).start()
    try:
        p = producer(w.settings)
        for m in msgs:
            p.send(w.settings.topic_logs, value=m)
        p.flush()
        w.wait_for(lambda m: m.get("coverwatch_dlq_total", 0) >= len(bad), timeout=240,
                   what="all hostile messages dead-lettered")
        wait_processed(w, len(good))
        time.sleep(3)
        rss = status_kb(w.proc.pid) / 1024
        c = counts(w)
        stored = {r[0]: r[1] for r in query(
            w, "SELECT tenant_id, count() FROM coverwatch.events FINAL GROUP BY 1")}
        (tables,), = query(w, "SELECT count() FROM system.tables WHERE database = 'coverwatch'")
        dlq_reasons = w.metrics()
    finally:
        w.stop(signal.SIGKILL)
    dlq = consume_all(w.settings, w.settings.topic_dlq, len(bad), timeout=120)
    assert len(dlq) == len(bad)
    # every hostile class reached the DLQ with its own reason, end to end
    got = Counter((want_reason.get(_dlq_key(_original(d))), d["reason"]) for d in dlq)
    assert got == Counter((r, r) for r in (want_reason[_dlq_key(m)] for m in bad)), got
    assert all(d["detail"] for d in dlq), [d for d in dlq if not d["detail"]][:3]
    assert c["events"] == len(good) and c["duplicates"] == 0, c
    want = {}
    for i in range(len(good)):
        t = valid_adversarial(i)["tenant_id"]
        want[t] = want.get(t, 0) + 1
    assert stored == want  # tenant ids verbatim, quotes and injections included
    assert tables >= 5  # nothing was dropped
    assert dlq_reasons["coverwatch_dlq_total"] == len(bad)
    assert rss < 2_000
    record("hostile_input", len(msgs), c, {}, malformed=len(bad), dead_lettered=len(dlq),
           max_rss_mb=rss)


def _original(d: dict) -> bytes:
    """The original bytes a DLQ record carries (its SHA-256 when they were cut)."""
    if d.get("original_truncated"):
        return d["original_sha256"].encode()
    if d["original_encoding"] == "base64":
        return base64.b64decode(d["original"])
    return d["original"].encode()


def _dlq_key(m: bytes) -> bytes:
    return hashlib.sha256(m).hexdigest().encode() if len(m) > DLQ_ORIGINAL_MAX else m


def test_duplicate_delivery(fault_kafka, tmp_path, stream):
    raw, expected = stream
    w = make_worker(fault_kafka, tmp_path, **HOOKS).start()
    try:
        p = producer(w.settings)
        for m in raw + raw:  # at-least-once upstream: everything twice
            p.send(w.settings.topic_logs, value=m, key=tenant_key(m))
        p.flush()
        w.wait_for(lambda m: m.get("coverwatch_events_in_total", 0) >= 2 * len(raw),
                   timeout=240, what="both copies consumed")
        wait_processed(w, len(raw))
        time.sleep(5)
        c = counts(w)
        dropped = w.metrics().get("coverwatch_duplicates_total", 0)
    finally:
        w.stop(signal.SIGKILL)
    assert c["events"] == len(raw) and c["duplicates"] == 0, c
    assert dropped == len(raw)
    assert_alerted(expected, c["alerted"])
    record("duplicate_delivery", 2 * len(raw), c, expected, duplicates_dropped=int(dropped))
