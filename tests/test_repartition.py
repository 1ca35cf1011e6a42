"""The ingest stage's batch step: records -> internal messages by tenant partition + dead letters."""
from __future__ import annotations

import uuid

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from pipeline.adapters import get_adapter
from pipeline.stream import repartition
from pipeline.stream.codec import decode_batch, partition_for


def record(offset: int, value: bytes, key: bytes | None = None) -> ConsumerRecord:
    return ConsumerRecord("api-logs", 2, offset, 0, 0, key, value, None, 0, len(value), [])


def event(i: int, tenant: str, **extra) -> bytes:
    return orjson.dumps({"event_id": f"e{i}", "ts": 1767225600000 + i, "tenant_id": tenant,
                         **extra})


def test_valid_events_go_to_their_tenant_partition_in_order_and_bad_ones_to_the_dlq():
    tenants = [f"tenant-{k}" for k in range(7)]
    recs = [record(i, event(i, tenants[i % 7], prompt=f"p{i}", embedding=[0.5, 1, -2.0]))
            for i in range(60)]
    recs.insert(10, record(100, b"{not json", key=b"k"))
    recs.insert(20, record(101, event(101, "t", embedding=[True, 1.0, 2.0])))
    out, dead = repartition.validate_batch(recs, get_adapter("coverwatch"), 3, 4)

    seen = []
    for p, value in out:
        evs = decode_batch(value)
        assert {partition_for(e.tenant_id, 4) for e in evs} == {p}
        seen += evs
    assert sorted(e.event_id for e in seen) == sorted(f"e{i}" for i in range(60))
    for t in tenants:   # a tenant's events keep their source order
        ids = [int(e.event_id[1:]) for e in seen if e.tenant_id == t]
        assert ids == sorted(ids)
    e7 = next(e for e in seen if e.event_id == "e7")
    assert (e7.tenant_id, e7.prompt, e7.embedding.tolist()) == ("tenant-0", "p7", [0.5, 1, -2])

    reasons = {orjson.loads(v)["offset"]: (k, orjson.loads(v)["reason"]) for k, v in dead}
    assert reasons == {100: (b"k", "invalid_json"), 101: (None, "embedding_value")}


def test_large_partitions_are_split_into_bounded_internal_messages():
    recs = [record(i, event(i, "one-tenant", prompt="x" * 500)) for i in range(100)]
    out, dead = repartition.validate_batch(recs, get_adapter("coverwatch"), 384, 4,
                                           chunk_bytes=10_000)
    assert not dead and len(out) > 1
    assert all(len(v) < 20_000 for _, v in out)
    assert [e.event_id for _, v in out for e in decode_batch(v)] == [f"e{i}" for i in range(100)]


# Kafka's own test vectors for its murmur2 (Java client, UtilsTest.testMurmur2), as signed
# 32-bit ints: the default partitioner is toPositive(murmur2(key)) % partitions.
JAVA_MURMUR2 = {b"21": -973932308, b"foobar": -790332482,
                b"a-little-bit-long-string": -985981536,
                b"a-little-bit-longer-string": -1486304829,
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
                b"abc": 479470107}
TENANTS = ["acme", "", "o'brien", "日本語テナント", "x" * 256, "new\nline", "a", "tenant-42",
           *[f"tenant-{i}" for i in range(200)]]


def java_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner, from the Java reference values where we have them."""
    return (JAVA_MURMUR2[key] & 0x7FFFFFFF) % partitions


def test_partition_for_matches_kafkas_reference_values():
    for key in JAVA_MURMUR2:
        for n in (1, 3, 4, 7, 12):
            assert partition_for(key.decode(), n) == java_partition(key, n), (key, n)


def test_partition_for_matches_an_independent_murmur2():
    from kafka.partitioner.default import murmur2 as kp_murmur2   # kafka-python's own
    for key in JAVA_MURMUR2:      # that implementation agrees with the Java values...
        assert kp_murmur2(key) == JAVA_MURMUR2[key] & 0xFFFFFFFF
    for t in TENANTS:             # ...and with ours on every kind of tenant id
        for n in (1, 4, 7, 12):
            assert partition_for(t, n) == (kp_murmur2(t.encode()) & 0x7FFFFFFF) % n, (t, n)
    assert len({partition_for(t, 4) for t in TENANTS}) == 4


@pytest.mark.integration
def test_partition_for_is_where_the_broker_puts_the_key(kafka):
    """Produce each tenant id as a key with a real client's default partitioner: the
    partition the broker acknowledges is the one partition_for names (what the tables'
    use_partitioner relies on)."""
    from kafka import KafkaProducer
    topic = f"placement-{uuid.uuid4().hex[:8]}"
    kafka.create_topics({topic: 7})
    p = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    try:
        futures = [(t, p.send(topic, key=t.encode(), value=b"x")) for t in TENANTS if t]
        placed = {t: f.get(timeout=60).partition for t, f in futures}
    finally:
        p.close()
    assert placed == {t: partition_for(t, 7) for t in placed}
    assert len(set(placed.values())) == 7
