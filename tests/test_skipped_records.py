"""A record the consumer skips is read again, in order, and its events are stored.

Faust's consumer can drop a record of the internal topic around a rebalance and still
acknowledge it (``pipeline.stream.batch.Continuity``); the fault suite's restarts lost one
record's events that way. Here a test hook drops one record the first time it is read,
through the real broker, worker and embedded ClickHouse.
"""
from __future__ import annotations

import time

import orjson
import pytest

from pipeline.kafka_io import produce_lines

from tests.conftest import query, raw_counts

pytestmark = pytest.mark.integration
T0 = 1772366400000  # 2026-03-01T12:00:00Z


def stored_once(w, sent: int, skipped: str, timeout: float = 120) -> str:
    """Wait for ``sent`` events; check the hook skipped its record and every event was
    stored exactly once (raw rows). Returns the worker's log."""
    deadline, got = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        (got,), = query(w, "SELECT uniqExact(event_id) FROM coverwatch.events")
        if got >= sent:
            break
        time.sleep(1)
    log = w.log_since_start()
    assert f"test hook: internal record {skipped} skipped once" in log, w.tail()
    assert got == sent, (got, sent, w.tail())
    c = raw_counts(lambda sql: query(w, sql))
    assert c["event_rows"] == sent and c["duplicates"] == 0, c
    assert w.metrics()["coverwatch_partition_rewinds_total"] >= 1
    return log


def test_a_record_the_consumer_skipped_is_read_again(worker_factory):
    w = worker_factory(COVERWATCH_DETECTOR="burst", COVERWATCH_EMBEDDER="none",
                       COVERWATCH_TEST_STOP_MERGES="1",
                       COVERWATCH_TEST_SKIP_RECORD="0:1").start()
    sent = 0
    # four rounds a few seconds apart: each partition of the internal topic gets a record
    # per round, so the skipped record (partition 0, offset 1) has records after it
    for round_ in range(4):
        lines = [orjson.dumps({"event_id": f"r{round_}-{t}-{i}", "tenant_id": f"tenant-{t}",
                               "ts": T0 + round_ * 60_000 + i * 500,
                               "prompt": f"question {i}"})
                 for t in range(16) for i in range(10)]
        sent += produce_lines(lines, w.settings, w.settings.topic_logs)
        time.sleep(3)
    log = stored_once(w, sent, "0:1")
    assert "never reached the detect agent; reading them again" in log


def test_a_skipped_record_with_nothing_after_it_is_read_again(worker_factory):
    """The skipped record is its partition's only one: no later record shows a gap, so the
    worker notices that partition sits below its high watermark with nothing coming."""
    w = worker_factory(COVERWATCH_DETECTOR="burst", COVERWATCH_EMBEDDER="none",
                       COVERWATCH_TEST_STOP_MERGES="1",
                       COVERWATCH_TEST_SKIP_RECORD="0:0").start()
    lines = [orjson.dumps({"event_id": f"s-{t}-{i}", "tenant_id": f"tenant-{t}",
                           "ts": T0 + i * 500, "prompt": f"question {i}"})
             for t in range(16) for i in range(4)]
    sent = produce_lines(lines, w.settings, w.settings.topic_logs)
    assert "reading them again" in stored_once(w, sent, "0:0")
