"""Plain Kafka clients (kafka-python) for the command line: produce logs, follow a topic."""
from __future__ import annotations

from typing import Iterable, Iterator

import orjson
from kafka import KafkaConsumer, KafkaProducer

from pipeline.settings import Settings


def client_config(s: Settings) -> dict:
    """Connection settings shared by every kafka-python client, security from configuration."""
    cfg: dict = {"bootstrap_servers": s.kafka_bootstrap.split(","),
                 "security_protocol": s.kafka_security_protocol}
    if s.kafka_sasl_mechanism:
        cfg.update(sasl_mechanism=s.kafka_sasl_mechanism,
                   sasl_plain_username=s.kafka_sasl_username,
                   sasl_plain_password=s.kafka_sasl_password)
    if s.kafka_ssl_cafile:
        cfg["ssl_cafile"] = s.kafka_ssl_cafile
    return cfg


def producer(s: Settings) -> KafkaProducer:
    return KafkaProducer(**client_config(s), acks="all", linger_ms=20, batch_size=256 * 1024,
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
    from pipeline.replay import open_lines

    def lines():
        for path in paths:
            with open_lines(path) as fh:
                for line in fh:
                    line = line.rstrip(b"\r\n")
                    if line.strip():
                        yield line
    return produce_lines(lines(), s, topic)


def follow(s: Settings, topic: str, *, from_beginning: bool = False,
           timeout_ms: int = 1000) -> Iterator[dict | None]:
    """Yield decoded JSON messages of ``topic`` as they arrive (None on each idle timeout)."""
    c = KafkaConsumer(topic, **client_config(s), group_id=None,
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
