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
    """A worker with topics of its own (created here) on the session's broker."""
    settings = isolated_settings(kafka.bootstrap, tmp, partitions=partitions)
    kafka.create_topics(topic_partitions(settings))
    return WorkerProcess(settings, tmp, **env)


def query(worker: WorkerProcess, sql: str, timeout: float = 60) -> list[list]:
    """Rows of a read-only query through the worker's /query endpoint."""
    return worker.query(sql, timeout=timeout)


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
        w = make_worker(kafka, tmp_path, partitions=partitions, **env)
        made.append(w)
        return w
    yield make
    for w in made:
        w.stop(signal.SIGKILL)
