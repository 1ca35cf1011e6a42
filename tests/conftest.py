"""Shared fixtures: a real Kafka broker per test session and real worker processes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kafka():
    """A real single-node Kafka 4.x broker on free ports, for the whole session."""
    from pipeline.testing.kafka import KafkaBroker
    broker = KafkaBroker()
    broker.start()
    yield broker
    broker.stop()


class WorkerProcess:
    """`coverwatch worker` in a subprocess with its own topics, app id and ClickHouse."""

    def __init__(self, kafka, tmp: Path, partitions: int = 4, **env):
        uid = uuid.uuid4().hex[:8]
        self.settings = Settings(
            kafka_bootstrap=kafka.bootstrap, clickhouse_dsn=f"chdb://{tmp / 'clickhouse'}",
            topic_logs=f"logs-{uid}", topic_dlq=f"dlq-{uid}", topic_alerts=f"alerts-{uid}",
            topic_events=f"events-{uid}", topic_summaries=f"summaries-{uid}",
            app_id=f"cw-{uid}", data_dir=str(tmp / "worker"),
            web_port=free_port(), sink_within_s=0.5, partitions=partitions)
        self.env = {**os.environ, **self._env(self.settings), **env}
        self.log = tmp / f"worker-{uid}.log"
        self.proc: subprocess.Popen | None = None
        kafka.create_topics({self.settings.topic_logs: partitions, self.settings.topic_dlq: 1,
                             self.settings.topic_alerts: 1, self.settings.topic_events: partitions,
                             self.settings.topic_summaries: 1})

    @staticmethod
    def _env(s: Settings) -> dict:
        return {"KAFKA_BOOTSTRAP": s.kafka_bootstrap, "CLICKHOUSE_DSN": s.clickhouse_dsn,
                "TOPIC_API_LOGS": s.topic_logs, "TOPIC_DLQ": s.topic_dlq,
                "TOPIC_ALERTS": s.topic_alerts, "TOPIC_EVENTS": s.topic_events,
                "TOPIC_SUMMARIES": s.topic_summaries,
                "COVERWATCH_APP_ID": s.app_id, "COVERWATCH_DATA_DIR": s.data_dir,
                "COVERWATCH_WEB_PORT": str(s.web_port), "TOPIC_PARTITIONS": str(s.partitions)}

    def start(self, timeout: float = 90) -> WorkerProcess:
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker"],
                                     cwd=REPO, env=self.env, stdout=fh, stderr=fh)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.tail()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.settings.web_port}/metrics",
                                       timeout=1)
                return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"worker not ready:\n{self.tail()}")

    def metrics(self) -> dict[str, float]:
        body = urllib.request.urlopen(
            f"http://127.0.0.1:{self.settings.web_port}/metrics", timeout=5).read().decode()
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def wait_for(self, cond, timeout: float = 120, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cond(self.metrics()):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.tail()}")
            time.sleep(0.5)
        raise TimeoutError(f"{what} not reached; metrics={self.metrics()}\n{self.tail()}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def query(worker: WorkerProcess, sql: str, timeout: float = 60) -> list[list]:
    """Rows of a read-only query through the worker's /query endpoint."""
    req = urllib.request.Request(f"http://127.0.0.1:{worker.settings.web_port}/query",
                                 data=orjson.dumps({"sql": sql}),
                                 headers={"Content-Type": "application/json"})
    return orjson.loads(urllib.request.urlopen(req, timeout=timeout).read())["rows"]


def consume_all(settings: Settings, topic: str, expect: int, timeout: float = 60) -> list[dict]:
    """Decoded messages of ``topic`` from the beginning, until ``expect`` or the timeout."""
    from kafka import KafkaConsumer

    from pipeline.kafka_io import client_config
    c = KafkaConsumer(topic, **client_config(settings), auto_offset_reset="earliest",
                      group_id=None, consumer_timeout_ms=2000)
    out, deadline = [], time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        for batch in c.poll(timeout_ms=1000).values():
            out += [orjson.loads(m.value) for m in batch]
    c.close()
    return out


@pytest.fixture
def worker_factory(kafka, tmp_path):
    made: list[WorkerProcess] = []

    def make(partitions: int = 4, **env) -> WorkerProcess:
        w = WorkerProcess(kafka, tmp_path, partitions=partitions, **env)
        made.append(w)
        return w
    yield make
    for w in made:
        w.stop(signal.SIGKILL)
