"""Plain Kafka clients (kafka-python) for the command line: produce logs, follow a topic."""
from __future__ import annotations

from typing import Iterable, Iterator

import orjson
from kafka import KafkaConsumer, KafkaProducer

from pipeline import jsonl
from pipeline.kafka_options import kafka_python_options
from pipeline.settings import Settings


def producer(s: Settings) -> KafkaProducer:
    return KafkaProducer(**kafka_python_options(s), acks="all", linger_ms=20, batch_size=256 * 1024,
                         max_request_size=16 * 1024 * 1024, compression_type=None)


def tenant_key(raw: bytes) -> bytes | None:
    """Key a raw log line by tenant when it parses, so one tenant stays on one partition."""
    try:
        obj = orjson.loads(raw)
        tenant = obj.get("tenant_id") if isinstance(obj, dict) else None
        return tenant.encode() if isinstance(tenant, str) else None
    except (orjson.JSONDecodeError, UnicodeEncodeError):
        return None


def produce_lines(lines: Iterable[bytes], s: Settings, topic: str) -> int:
    p = producer(s)
    n = 0
    for line in lines:
        p.send(topic, value=line, key=tenant_key(line))
        n += 1
    p.flush()
    p.close()
    return n


def produce_files(paths, s: Settings, topic: str) -> int:
    return produce_lines(jsonl.lines(paths), s, topic)


def follow(s: Settings, topic: str, *, from_beginning: bool = False,
           timeout_ms: int = 1000) -> Iterator[dict | None]:
    """Yield decoded JSON messages of ``topic`` as they arrive (None on each idle timeout)."""
    c = KafkaConsumer(topic, **kafka_python_options(s), group_id=None,
                      auto_offset_reset="earliest" if from_beginning else "latest")
    try:
        while True:
            records = c.poll(timeout_ms=timeout_ms)
            if not records:
                yield None
            for batch in records.values():
                for msg in batch:
                    yield orjson.loads(msg.value)
    finally:
        c.close()


def committed_offsets(s: Settings, group: str, topic: str,
                      partitions: Iterable[int] | None = None) -> dict[int, int]:
    """Where ``group`` resumes each partition of ``topic`` (all of them when
    ``partitions`` is None): its committed offset, or the partition's first offset where it
    has none (or one retention has since deleted). Read without joining the group."""
    from kafka import TopicPartition
    c = KafkaConsumer(**kafka_python_options(s), group_id=group, enable_auto_commit=False,
                      request_timeout_ms=15_000)
    try:
        if partitions is None:
            partitions = sorted(c.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return {}
        first = c.beginning_offsets(tps)
        return {tp.partition: max(c.committed(tp) or 0, first[tp]) for tp in tps}
    finally:
        c.close()
