"""The ingest stage's batch step: records -> internal messages by tenant partition + dead letters."""
from __future__ import annotations

import orjson
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
