"""Shared fixtures: a real Kafka broker per test session and real worker processes."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest

from pipeline.settings import Settings
from pipeline.testing.worker import WorkerProcess, isolated_settings, topic_partitions


@pytest.fixture(scope="session")
def kafka():
    """A real single-node Kafka 4.x broker on free ports, for the whole session."""
    from pipeline.testing.kafka import KafkaBroker
    broker = KafkaBroker()
    broker.start()
    yield broker
    broker.stop()


def make_worker(kafka, tmp: Path, partitions: int = 4, **env) -> WorkerProcess:
    """A worker with topics of its own (created here) on the session's broker.

    It runs through :mod:`pipeline.testing.hooked_worker` (the CLI's worker plus the test
    hooks its environment asks for, e.g. ``COVERWATCH_TEST_STOP_MERGES=1``)."""
    settings = isolated_settings(kafka.bootstrap, tmp, partitions=partitions)
    kafka.create_topics(topic_partitions(settings))
    return WorkerProcess(settings, tmp, module="pipeline.testing.hooked_worker", **env)


def raw_counts(run) -> dict:
    """Rows as stored, before any ReplacingMergeTree collapse (no FINAL), and duplicates.

    ``run(sql)`` returns rows. ``duplicates`` counts every row beyond the first of an
    event (tenant_id, event_id) or of an alert version (alert_id, version: a campaign alert
    is re-emitted under its alert_id with a higher version as members join, by design).
    ``merged_parts`` is the number of active parts that came from a merge: when it is not 0
    a merge may have collapsed duplicates and the raw counts prove nothing.
    """
    (events, distinct, dup_events, most), = run(
        "SELECT sum(n), count(), countIf(n > 1), max(n) FROM (SELECT count() AS n "
        "FROM coverwatch.events GROUP BY tenant_id, event_id)")
    (alerts, alert_versions, distinct_alerts), = run(
        "SELECT count(), uniqExact(alert_id, version), uniqExact(alert_id) "
        "FROM coverwatch.alerts")
    (merged,), = run("SELECT count() FROM system.parts WHERE database = 'coverwatch' "
                     "AND table IN ('events', 'alerts') AND active "
                     "AND min_block_number < max_block_number")
    return {"event_rows": int(events or 0), "events": int(distinct),
            "events_duplicated": int(dup_events), "max_rows_per_event": int(most or 0),
            "alert_rows": int(alerts), "alerts": int(distinct_alerts),
            "duplicates": int(events or 0) - int(distinct) + int(alerts) - int(alert_versions),
            "merged_parts": int(merged)}


def query(worker: WorkerProcess, sql: str, timeout: float = 60) -> list[list]:
    """Rows of a read-only query through the worker's /query endpoint."""
    return worker.query(sql, timeout=timeout)


def consume_all(settings: Settings, topic: str, expect: int, timeout: float = 60,
                quiet_s: float = 5.0) -> list[dict]:
    """Every decoded message of ``topic`` from the beginning.

    Reads until at least ``expect`` messages arrived (or ``timeout``), then keeps reading
    until nothing new came for ``quiet_s`` seconds: surplus messages (a duplicate alert, a
    late second alert) are returned too, so callers comparing exact lists see them.
    """
    from kafka import KafkaConsumer

    from pipeline.kafka_options import kafka_python_options
    c = KafkaConsumer(topic, **kafka_python_options(settings), auto_offset_reset="earliest",
                      group_id=None, consumer_timeout_ms=2000)
    out, deadline = [], time.monotonic() + timeout
    last_new = time.monotonic()
    while time.monotonic() < deadline:
        got = [orjson.loads(m.value) for batch in c.poll(timeout_ms=500).values()
               for m in batch]
        if got:
            out += got
            last_new = time.monotonic()
        elif len(out) >= expect and time.monotonic() - last_new >= quiet_s:
            break
    c.close()
    return out


@pytest.fixture(scope="session")
def engine_dsn(tmp_path_factory) -> str:
    """The one embedded ClickHouse of this test process (chdb opens one path per process:
    every in-process test that writes to ClickHouse shares it; see :func:`fresh_engine`)."""
    return f"chdb://{tmp_path_factory.mktemp('engine') / 'ch'}"


def fresh_engine(dsn: str) -> None:
    """Empty the coverwatch tables of the shared engine, with background merges stopped."""
    import clickhouse_connect

    from pipeline.sinks import clickhouse as ch
    from pipeline.sinks.clickhouse import apply_migrations
    from pipeline.testing.hooked_worker import stop_merges
    # A new session on the same engine: a query refused in readonly mode leaves the shared
    # session readonly (see tests/test_sink.py), which must not leak from test to test.
    with ch._clients_lock:
        ch._clients[dsn] = client = clickhouse_connect.get_client(dsn=dsn)
    apply_migrations(client)
    for table in ("events", "alerts", "tenant_minutes"):
        client.command(f"TRUNCATE TABLE coverwatch.{table}")
    stop_merges(client)


@pytest.fixture
def worker_factory(kafka, tmp_path):
    made: list[WorkerProcess] = []

    def make(partitions: int = 4, **env) -> WorkerProcess:
        w = make_worker(kafka, tmp_path, partitions=partitions, **env)
        made.append(w)
        return w
    yield make
    for w in made:
        w.stop(signal.SIGKILL)
