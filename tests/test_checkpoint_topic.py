"""Global models through the compacted checkpoint topic, on a real broker.

A worker restarted on a fresh data directory (another machine) must come back with the
population and campaign stage it had: state equality, not just a clean start. Also: the
newer of the local file and the topic record wins, the topic is compacted with room for
large records, and another detector version's record is ignored.
"""
from __future__ import annotations

import uuid

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from pipeline.stream import checkpoint
from pipeline.stream.checkpoint import CheckpointTopic
from pipeline.stream.state import Checkpoints
from pipeline.testing.worker import isolated_settings
from tests.test_state import BATCH, Worker, events  # noqa: F401 - the module's fixture

pytestmark = pytest.mark.integration


class RemoteWorker(Worker):
    """test_state's driver, its Checkpoints also writing to the checkpoint topic."""

    def __init__(self, table: dict, data_dir: str, settings):
        super().__init__(table, data_dir)
        self.remote = CheckpointTopic(settings)
        self.cp = Checkpoints([self.det, self.sketcher], data_dir, {
            "population.bin": (self.det, "dump_population", "load_population"),
            "campaigns.bin": (self.stage, "dump", "load")}, remote=self.remote)

    def run(self, events, start: int, end: int) -> list:
        out = []
        for b in range(start, end, BATCH):
            out += self.batch(b, events[b:b + BATCH])
            self.cp.cover("events", [(0, b, min(end, b + BATCH) - 1)])
        return out

    def save(self) -> None:
        self.cp.maybe_save_globals(force=True)
        self.remote.flush()


@pytest.fixture
def settings(kafka, tmp_path):
    return isolated_settings(kafka.bootstrap, tmp_path, uid=uuid.uuid4().hex[:8])


def test_restart_on_a_fresh_data_dir_restores_from_the_topic(events, settings, tmp_path):  # noqa: F811
    table: dict = {}
    first = RemoteWorker(table, str(tmp_path / "machine-a"), settings)
    first.run(events, 0, 1500)
    first.save()
    assert first.stage.summaries > 0
    second = RemoteWorker(table, str(tmp_path / "machine-b"), settings)   # nothing on disk
    assert [g.restored_from for g in second.cp.globals] == ["topic", "topic"]
    assert second.det.dump_population() == first.det.dump_population()
    assert second.stage.dump() == first.stage.dump()
    # the record names the offsets it covers
    raw = CheckpointTopic(settings).latest(["population.bin"])["population.bin"]
    assert checkpoint.decode(raw).offsets == {"events": {0: 1499}}


def test_the_newer_snapshot_wins(events, settings, tmp_path):  # noqa: F811
    a = RemoteWorker({}, str(tmp_path / "a"), settings)
    a.run(events, 0, 600)
    a.save()                                   # topic and a's disk: 600 events
    b = RemoteWorker({}, str(tmp_path / "b"), settings)
    b.run(events, 600, 1200)
    b.save()                                   # topic now newer than a's disk
    restarted_a = RemoteWorker({}, str(tmp_path / "a"), settings)
    assert restarted_a.det.dump_population() == b.det.dump_population()
    b.cp.globals[0].remote = None              # b's next save reaches its disk only
    b.run(events, 1200, 1500)
    b.cp.maybe_save_globals(force=True)
    restarted_b = RemoteWorker({}, str(tmp_path / "b"), settings)
    assert restarted_b.cp.globals[0].restored_from == "disk"
    assert restarted_b.det.dump_population() == b.det.dump_population()


def test_topic_is_compacted_with_room_for_a_population(events, settings, tmp_path):  # noqa: F811
    w = RemoteWorker({}, str(tmp_path), settings)
    w.run(events, 0, 300)
    w.save()
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                     settings.topic_checkpoints)])
        (by_name,) = res.values()                       # kafka-python 3: nested dicts
        cfg = {k: v["value"] if isinstance(v, dict) else v
               for k, v in by_name[settings.topic_checkpoints].items()}
    finally:
        admin.close()
    assert cfg.get("cleanup.policy") == "compact", res
    assert int(cfg["max.message.bytes"]) == checkpoint.MAX_BYTES


def test_a_record_of_another_version_is_ignored(events, settings, tmp_path):  # noqa: F811
    w = RemoteWorker({}, str(tmp_path / "a"), settings)
    w.run(events, 0, 300)
    payload = w.det.dump_population()
    stale = checkpoint.Snapshot(w.cp.tag ^ 1, checkpoint.now_ms(), payload)
    w.remote.put("population.bin", checkpoint.encode(stale))
    w.remote.flush()
    fresh = RemoteWorker({}, str(tmp_path / "b"), settings)
    assert fresh.cp.globals[0].restored_from is None
    assert fresh.det.dump_population() != payload


def test_encode_decode_round_trip_and_old_file_format():
    snap = checkpoint.Snapshot(7, 123, b"x" * 10_000, {"t": {0: 5, 3: 9}})
    data = checkpoint.encode(snap)
    assert len(data) < 200 and checkpoint.decode(data) == snap
    old = checkpoint.decode(b"\x00\x00\x00\x07payload", mtime_ms=99)
    assert old == checkpoint.Snapshot(7, 99, b"payload")
    assert checkpoint.newest(7, old, snap, None) is snap
    assert checkpoint.newest(8, old, snap) is None


def test_the_campaign_stage_moves_with_its_partition(events, settings, tmp_path):  # noqa: F811
    """The summaries partition moves from process a to b (another process or machine of the
    group): a hands its stage over when revoked, b takes it over when assigned."""
    a = RemoteWorker({}, str(tmp_path / "a"), settings)
    b = RemoteWorker({}, str(tmp_path / "b"), settings)   # started with nothing to load
    a.run(events, 0, 900)
    assert a.stage.summaries > 0 and b.stage.dump() != a.stage.dump()
    a.cp.hand_over("campaigns.bin")
    assert b.cp.take_over("campaigns.bin")
    assert b.stage.dump() == a.stage.dump()
    assert not b.cp.take_over("campaigns.bin")   # nothing newer: nothing reloaded
    assert not a.cp.take_over("campaigns.bin")   # a's own save is what it stands on
