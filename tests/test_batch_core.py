"""The detect stage's commit rules, list-in/list-out (pipeline/stream/batch.py, no broker).

A worker restart is a new core (new detector, processor, checkpoints) over what survives a
crash: the state table, the committed offsets and what was already written
(:class:`pipeline.testing.batches.Topic`).
"""
from __future__ import annotations

import orjson
import pytest

from pipeline.contracts.events import Event
from pipeline.detect.burst import BurstDetector
from pipeline.adapters import native
from pipeline.stream.batch import Continuity, Record, keyed_logs
from pipeline.stream.codec import partition_for
from pipeline.testing.batches import Crash, Topic, messages

T0 = 1_767_225_600_000


class Fussy(BurstDetector):
    """Fails on one tenant, like a detector bug triggered by one customer's data."""

    def update(self, event):
        if event.tenant_id == "poison":
            raise RuntimeError("boom")
        return super().update(event)


def detector() -> BurstDetector:
    return Fussy(min_events=50, ratio=5.0)


def stream() -> list[Event]:
    """Two quiet tenants, one of which bursts (one alert) after half an hour."""
    quiet = [Event(f"q{k}-{i}", T0 + i * 60_000 + k, f"t{k}") for k in (1, 2) for i in range(30)]
    loud = [Event(f"l{i}", T0 + 31 * 60_000 + i * 100, "t1") for i in range(100)]
    return sorted(quiet + loud, key=lambda e: e.ts_ms)


def learned(topic: Topic) -> dict:
    """What the table says each tenant learned: its events seen (BurstDetector's count)."""
    import pickle
    import struct
    out = {}
    for key, value in topic.out.table.items():
        (n,) = struct.unpack_from(">I", value, 12)
        out[key] = pickle.loads(value[16:16 + n]).seen
    return out


def test_poison_message_and_event_become_dead_letters_and_the_batch_commits():
    good = messages([Event(f"g{i}", T0 + i, "t1") for i in range(4)], per_message=2)
    poison = messages([Event("p1", T0, "poison"), Event("p2", T0 + 1, "poison")], start=2,
                      per_message=2)
    garbage = [Record(0, 3, b"\x00\x00\x00\x09not json!")]
    topic = Topic(good + poison + garbage)
    topic.run(topic.core(detector()), batch=10)
    dead = sorted((orjson.loads(v) for _, v in topic.out.dead), key=lambda d: d["offset"])
    assert sorted((d["reason"], d["offset"]) for d in dead) == [
        ("internal_error", 2), ("internal_error", 2), ("internal_error", 3)]
    assert "boom" in dead[0]["detail"] and "undecodable" in dead[2]["detail"]
    assert [e.event_id for e in topic.out.stored_events] == ["g0", "g1", "g2", "g3"]
    assert topic.out.commits == [{0: 4}]          # committed past the poison, not stuck on it


def test_a_redelivered_event_is_not_learned_twice():
    """Offsets not committed (a lost commit): a restarted worker reads everything again, and
    learns none of it a second time; the rows keep their dedup tokens."""
    topic = Topic(messages(stream(), per_message=10))
    topic.run(topic.core(detector()), batch=2)
    before, tokens = learned(topic), [d.dedup for d in topic.out.stored]
    assert before == {b"t1": 130, b"t2": 30}
    topic.out.committed.clear()
    again = topic.core(detector())
    topic.run(again, batch=2)
    assert learned(topic) == before
    assert again.processor.detector._tenants.keys() == {"t1", "t2"}   # restored, not relearned
    assert all(not d.kept for d in topic.out.stored[len(tokens):])
    assert [d.dedup for d in topic.out.stored[len(tokens):]] == tokens


def test_every_write_of_a_batch_comes_before_its_commit():
    topic = Topic(messages(stream(), per_message=10))
    topic.run(topic.core(detector()), batch=2)
    assert topic.out.alerts, "the stream bursts: an alert must be written"
    steps = topic.out.steps
    for n in range(1, topic.out.batch + 1):
        mine = [s for s, b in steps if b == n]
        assert mine[-1] == "commit" and mine.count("commit") == 1, mine
        assert mine.index("store") < mine.index("state"), mine   # rows before "learned"
    assert any(s == "alert" for s, _ in steps)


@pytest.mark.parametrize("crash_before", ["alert", "state", "commit"])
def test_a_crash_between_store_and_commit_replays_without_double_learning(crash_before):
    """The worker dies after storing a batch in the middle of the stream (the one that
    alerts, for "alert"), and restarts from the last commit."""
    reference = Topic(messages(stream(), per_message=10))
    reference.run(reference.core(detector()), batch=2)

    topic = Topic(messages(stream(), per_message=10))
    with pytest.raises(Crash):
        topic.run(topic.core(detector()), batch=2, crash_before=crash_before, crash_from=4)
    stored = len(topic.out.stored)
    assert stored >= 4 and topic.out.committed
    topic.run(topic.core(detector()), batch=2)           # the restart

    assert learned(topic) == learned(reference) == {b"t1": 130, b"t2": 30}
    assert topic.out.table == reference.out.table
    # the batch stored before the crash is stored again under the same token (no new rows)
    assert topic.out.stored[stored].dedup == topic.out.stored[stored - 1].dedup
    assert {a.alert_id for a in topic.out.alerts} == {a.alert_id for a in reference.out.alerts}
    assert all(a.detector_version for a in topic.out.alerts)


def keyed(events: list[Event], partitions: int = 4) -> list[Record]:
    """``events`` as their producers send them to a topic keyed by tenant: one JSON object
    per message, on the tenant's partition (what ``coverwatch produce`` does)."""
    offsets: dict[int, int] = {}
    out = []
    for e in events:
        p = partition_for(e.tenant_id, partitions)
        offsets[p] = offsets.get(p, -1) + 1
        out.append(Record(p, offsets[p], orjson.dumps(e.to_dict()), e.tenant_id.encode()))
    return out


def keyed_core(topic: Topic):
    return topic.core(detector(), decode=keyed_logs(native, None, 4, "api-logs"))


def test_keyed_input_validates_and_refuses_events_on_the_wrong_partition():
    """No repartition hop: raw messages are validated in the batch, bad ones dead-lettered
    with their own reason, and an event whose tenant lives on another partition is refused
    (its state is not here, and positions of two partitions do not compare)."""
    good = keyed([Event(f"g{i}", T0 + i, "t1") for i in range(3)])
    home = good[0].partition
    stray = Event("s1", T0, next(t for t in (f"x{k}" for k in range(99))
                                 if partition_for(t, 4) != home))
    topic = Topic(good + [Record(home, 3, b"{not json", b"t1"),
                          Record(home, 4, orjson.dumps(stray.to_dict()), b"t1")])
    topic.run(keyed_core(topic), batch=10)
    dead = sorted((orjson.loads(v) for _, v in topic.out.dead), key=lambda d: d["offset"])
    assert [(d["reason"], d["offset"], d["topic"]) for d in dead] == [
        ("invalid_json", 3, "api-logs"), ("internal_error", 4, "api-logs")]
    assert "not keyed by tenant" in dead[1]["detail"]
    assert [e.event_id for e in topic.out.stored_events] == ["g0", "g1", "g2"]
    assert topic.out.commits == [{home: 5}]


@pytest.mark.parametrize("crash_before", ["state", "commit"])
def test_keyed_input_replays_a_crash_without_double_learning(crash_before):
    reference = Topic(keyed(stream()))
    reference.run(keyed_core(reference), batch=20)
    topic = Topic(keyed(stream()))
    with pytest.raises(Crash):
        topic.run(keyed_core(topic), batch=20, crash_before=crash_before, crash_from=4)
    topic.run(keyed_core(topic), batch=20)
    assert learned(topic) == learned(reference) == {b"t1": 130, b"t2": 30}
    assert {a.alert_id for a in topic.out.alerts} == {a.alert_id for a in reference.out.alerts}



def test_a_failed_write_after_detection_is_written_again_not_dropped():
    """A batch is detected once (its tenants learned it): when one of its writes fails, the
    shell writes the same batch again until it lands, then commits once."""
    import asyncio

    from pipeline.stream.batch import deliver_until_done

    topic = Topic(messages(stream(), per_message=10))
    core = topic.core(detector())
    topic.out.flaky = {"state": 1, "store": 1}
    topic.out.batch = 1
    batch = core.run(topic.records)
    asyncio.run(deliver_until_done(batch, topic.out, pause_s=0.01))
    assert topic.out.flaky == {"state": 0, "store": 0}
    # written twice (the state write failed after the store), under one dedup token: the
    # sink keeps one copy
    assert {e.event_id for e in topic.out.stored_events} == {e.event_id for e in stream()}
    assert {d.dedup for d in topic.out.stored} == {batch.dedup}
    assert learned(topic) == {b"t1": 130, b"t2": 30}
    assert topic.out.commits == [{0: max(r.offset for r in topic.records) + 1}]


def test_continuity_holds_a_partition_back_until_its_skipped_records_come_back():
    c = Continuity()
    c.start({0: 10, 1: 0})
    admitted, rewind = c.admit([Record(0, 12, b""), Record(1, 0, b""), Record(0, 13, b"")])
    assert [(r.partition, r.offset) for r in admitted] == [(1, 0)] and rewind == {0: 10}
    admitted, rewind = c.admit([Record(0, 10, b""), Record(0, 11, b""), Record(0, 12, b"")])
    assert [r.offset for r in admitted] == [10, 11, 12] and rewind == {}
    c.forget({0})
    assert c.admit([Record(0, 40, b"")])[1] == {}     # a new assignment without a reference


def test_continuity_gives_up_on_records_that_never_come_back():
    c = Continuity()
    c.start({0: 5})
    for _ in range(Continuity.MAX_REWINDS):
        assert c.admit([Record(0, 9, b"")]) == ([], {0: 5})
    admitted, rewind = c.admit([Record(0, 9, b"")])
    assert [r.offset for r in admitted] == [9] and rewind == {}
    assert c.given_up == [(0, 5, 8)]
