"""/metrics and /health tell an operator the truth: a stalled sink fails /health, a restarted
worker with nothing to read has no lag, and the page is standard Prometheus exposition."""
from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request

import orjson
import pytest

from tests.conftest import make_worker

pytestmark = pytest.mark.integration


def produce(w, n: int, prefix: str) -> None:
    from kafka import KafkaProducer

    from pipeline.kafka_options import kafka_python_options
    p = KafkaProducer(**kafka_python_options(w.settings))
    for i in range(n):
        p.send(w.settings.topic_logs, orjson.dumps(
            {"event_id": f"{prefix}-{i}", "ts": 1767225600000 + i, "tenant_id": f"t{i % 7}"}))
    p.flush()
    p.close()


def health(w) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{w.url}/health", timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def wait_health(w, status: int, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, body = health(w)
        if got == status:
            return body
        time.sleep(0.5)
    raise TimeoutError(f"/health never answered {status}; last {got} {body}")


def test_a_stalled_sink_fails_health_and_shows_on_metrics(kafka, tmp_path):
    fault = tmp_path / "clickhouse-down"
    w = make_worker(kafka, tmp_path, COVERWATCH_DETECTOR="burst", COVERWATCH_EMBEDDER="none",
                    COVERWATCH_FAULT_FILE=str(fault), COVERWATCH_STALL_S="3").start()
    try:
        produce(w, 100, "ok")
        w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= 100)
        assert health(w)[0] == 200
        page = urllib.request.urlopen(f"{w.url}/metrics", timeout=10).read().decode()
        for name in ("coverwatch_events_in_total", "coverwatch_events_detected_total",
                     "coverwatch_seconds_since_stored", "coverwatch_seconds_since_detect_batch",
                     "coverwatch_batch_duration_seconds", "coverwatch_stored_latency_seconds",
                     "coverwatch_changelog_pending",
                     "process_resident_memory_bytes", "process_open_fds"):
            assert f"# HELP {name}" in page, name
        m = w.metrics()
        assert m["coverwatch_stored_latency_seconds_count"] >= 1
        assert m["coverwatch_batch_duration_seconds_count"] >= 1

        fault.touch()
        produce(w, 100, "stuck")
        body = wait_health(w, 503)
        assert "sink" in body["reason"] or "stored" in body["reason"]
        m = w.metrics()
        assert m["coverwatch_sink_behind_seconds"] > 3
        assert m["coverwatch_seconds_since_stored"] > 3
        fault.unlink()
        wait_health(w, 200)
        w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= 200)
    finally:
        w.stop(signal.SIGKILL)


def test_a_restarted_worker_with_nothing_to_read_has_no_lag(kafka, tmp_path):
    w = make_worker(kafka, tmp_path, COVERWATCH_DETECTOR="burst",
                    COVERWATCH_EMBEDDER="none").start()
    try:
        produce(w, 500, "before")
        w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= 500)
        w.stop()
        w.start()
        key = f'coverwatch_consumer_lag{{topic="{w.settings.topic_logs}"}}'
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = w.metrics()
            if key in m:
                seen.append(m[key])
            time.sleep(0.5)
        assert seen and max(seen) == 0, seen
    finally:
        w.stop(signal.SIGKILL)
