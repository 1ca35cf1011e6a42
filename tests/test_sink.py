"""The ClickHouse sink on the real embedded engine: dedup tokens, retries, prompt storage.

Raw rows are counted with background merges stopped (as the fault suite does), so a row
written twice is seen twice: ReplacingMergeTree would hide it under FINAL or after a merge.
"""
from __future__ import annotations

import hashlib
import uuid

import pytest

from pipeline.contracts.alerts import Alert
from pipeline.contracts.events import Event
from pipeline.detect.base import Scored
from pipeline.settings import Settings
from pipeline.sinks.clickhouse import ClickHouseSink, token

from tests.conftest import fresh_engine, raw_counts

T0 = 1772366400000


@pytest.fixture
def sink(engine_dsn):
    fresh_engine(engine_dsn)
    return ClickHouseSink(engine_dsn, retry_s=0.01)


def tok(name: str) -> str:
    """A token no earlier test used (the engine's dedup log outlives TRUNCATE)."""
    return f"{name}-{uuid.uuid4().hex}"


def rows(sink):
    return lambda sql: sink.query(sql)[1]


def batch(n=10, prompt=None):
    events = [Event(f"e{i}", T0 + i, f"t{i % 3}", prompt=prompt) for i in range(n)]
    return events, [Scored(cell=i + 1, novel=True) for i in range(n)]


def alert(tenant="t0", n=100, related=()):
    return Alert.new(tenant_id=tenant, detector="coverage", ts_ms=T0, severity="warning",
                     score=2.0, threshold=1.0, events_seen=n, episode=1,
                     evidence={"summary": "Tenant t0 swept."}, related_tenants=list(related))


def test_a_duplicate_written_on_purpose_is_counted(sink):
    events, scored = batch()
    a = tok("a")
    sink.write(events, scored, [alert()], a)
    sink.write(events, scored, [alert()], a)      # a retry: deduplicated at insert
    c = raw_counts(rows(sink))
    assert (c["event_rows"], c["events"], c["duplicates"]) == (10, 10, 0)
    sink.write(events, scored, [alert()], tok("b"))      # same rows, another token
    c = raw_counts(rows(sink))
    assert c["merged_parts"] == 0
    assert (c["event_rows"], c["events"], c["events_duplicated"]) == (20, 10, 10)
    assert (c["alert_rows"], c["alerts"]) == (2, 1)
    assert c["duplicates"] == 11
    # FINAL hides it: the count the fault suite used to take
    assert sink.query("SELECT count() FROM coverwatch.events FINAL")[1] == [[10]]


def test_a_campaign_alert_growing_is_not_a_duplicate(sink):
    sink.write([], [], [alert(n=100, related=["a"])], tok("c1"))
    sink.write([], [], [alert(n=150, related=["a", "b"])], tok("c2"))
    c = raw_counts(rows(sink))
    assert (c["alert_rows"], c["alerts"], c["duplicates"]) == (2, 1, 0)


def test_retry_after_an_insert_that_landed_adds_no_rows(sink):
    """The acknowledgement is lost after the insert reached the engine: the sink retries
    with the same token and the engine drops the second copy."""
    real = sink._insert
    failed = []

    def land_then_fail(table, data, columns, dedup, column_oriented=False):
        real(table, data, columns, dedup, column_oriented)
        if table not in failed:
            failed.append(table)
            raise ConnectionError("acknowledgement lost")
    sink._insert = land_then_fail
    events, scored = batch()
    sink.write(events, scored, [alert()], tok("events"), max_wait_s=30)
    assert failed == ["coverwatch.events", "coverwatch.alerts"] and sink.failures == 2
    c = raw_counts(rows(sink))
    assert (c["event_rows"], c["alert_rows"], c["duplicates"]) == (10, 1, 0)
    assert sink.behind_s == 0.0
    # the materialised view's sums saw the batch once too
    assert sink.query("SELECT sum(novel), uniqExactMerge(queries) "
                      "FROM coverwatch.tenant_minutes")[1] == [[10, 10]]


# Found by this test (a refused query left the embedded engine's shared session read-only, so
# every later insert failed and the sink retried forever); fixed by running analyst queries
# on a client of their own after the SQL check (pipeline/sinks/readonly_sql.py).
def test_a_refused_query_leaves_inserts_working(sink):
    with pytest.raises(Exception, match="(?i)readonly"):
        sink.query("DROP TABLE coverwatch.events")
    events, scored = batch()
    sink.write(events, scored, [], tok("after-refusal"), max_wait_s=0)
    assert raw_counts(rows(sink))["event_rows"] == 10


def test_the_batch_token_names_the_offsets():
    assert token("events", (0, 5, 9), (1, 3, 3)) == token("events", (0, 5, 9), (1, 3, 3))
    assert token("events", (0, 5, 9)) != token("events", (0, 5, 10))
    assert token("events", (0, 5, 9)) != token("events", (1, 5, 9))
    assert token("events", (0, 5, 9)) != token("other", (0, 5, 9))


@pytest.mark.parametrize("mode", ["default", "none", "hash", "text"])
def test_store_prompts_modes(engine_dsn, mode):
    env = {} if mode == "default" else {"COVERWATCH_STORE_PROMPTS": mode}
    env["COVERWATCH_PROMPT_SALT"] = "pepper"
    fresh_engine(engine_dsn)
    s = Settings.from_env(env, clickhouse_dsn=engine_dsn)
    sink = ClickHouseSink(s.clickhouse_dsn, store_prompts=s.store_prompts,
                          prompt_salt=s.prompt_salt)
    secret = "What is the system prompt of model X? 'quoted' \n newline"
    events, scored = batch(3, prompt=secret)
    events.append(Event("np", T0, "t0"))             # no prompt at all
    scored.append(Scored())
    sink.write(events, scored, [], tok("p"))
    stored = dict(sink.query("SELECT event_id, prompt FROM coverwatch.events")[1])
    want_hash = hashlib.blake2b(secret.encode(), key=b"pepper", digest_size=16).hexdigest()
    expected = {"default": "", "none": "", "hash": want_hash, "text": secret}[mode]
    assert stored == {"e0": expected, "e1": expected, "e2": expected, "np": ""}
    assert sink.query("SELECT countIf(has_prompt) FROM coverwatch.events")[1] == [[3]]
    if mode == "hash":   # salted: another salt gives another value, never the text
        other = hashlib.blake2b(secret.encode(), key=b"salt2", digest_size=16).hexdigest()
        assert want_hash != other and secret not in want_hash


def test_store_prompts_rejects_unknown_modes():
    with pytest.raises(SystemExit):
        Settings.from_env({"COVERWATCH_STORE_PROMPTS": "all"})


def test_concurrent_queries_get_their_own_results(sink):
    """Two analyst queries at once must not read each other's rows. On one shared client
    a count beside a 10M-row query got 65,410 of that query's rows (the hostile-queries
    fault scenario found it); each query thread now has a client of its own."""
    import threading

    from pipeline.sinks import readonly_sql
    lim = readonly_sql.limits(2, 100_000, 1024)
    clients, wrong = [], []

    def big():
        clients.append(sink.query_client)
        for _ in range(3):
            try:
                sink.query("SELECT * FROM numbers(10000000)", limits=lim)
            except Exception:  # noqa: BLE001 - refused past max_result_rows, as it must be
                pass

    def small():
        clients.append(sink.query_client)
        for _ in range(100):
            _, got = sink.query("SELECT uniqExact(number) FROM numbers(10)", limits=lim)
            if got != [[10]]:
                wrong.append(len(got))
    sink.query("SELECT 1")        # a client exists before the two threads ask for one
    threads = [threading.Thread(target=big), threading.Thread(target=small)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clients[0] is not clients[1]
    assert wrong == []
