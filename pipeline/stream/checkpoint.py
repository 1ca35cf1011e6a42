"""Global models (population, campaign stage) checkpointed to a compacted Kafka topic.

A local-disk snapshot is lost with its machine: a worker restarted elsewhere, or on a fresh
data directory, came back with a cold population and missed alerts. The same snapshot is
therefore also written to a compacted topic (one record per model key, the newest kept),
which any worker of the app finds at start-up; the newer of the topic's record and the local
file wins. Each snapshot names the detector version tag, when it was taken and the input
offsets it covers (last processed offset per topic partition).

Functional core: :func:`encode` / :func:`decode` / :func:`newest`. Shell:
:class:`CheckpointTopic` (kafka-python; creates the topic, writes, reads the latest record
per key by scanning backwards from the end, so start-up does not read the whole history of
a topic that compaction has not cleaned yet). A checkpoint carries model parameters
(histograms, trees, cell counts, account groups), never a raw prompt, address or key id.
"""
from __future__ import annotations

import logging
import struct
import time
import zlib
from dataclasses import dataclass, field

import orjson

log = logging.getLogger(__name__)

MAGIC = b"CWG1"
_HLEN = struct.Struct(">I")
_OLD_TAG = struct.Struct(">I")
# A zlib-compressed population is a few MB; Kafka's default max message is 1 MB.
MAX_BYTES = 64 * 1024 * 1024
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "max.message.bytes": str(MAX_BYTES),
    # compaction only cleans closed segments: roll often so superseded snapshots go
    "segment.ms": str(10 * 60_000),
    "min.cleanable.dirty.ratio": "0.1",
}


@dataclass(frozen=True)
class Snapshot:
    tag: int
    saved_ms: int
    payload: bytes
    offsets: dict = field(default_factory=dict)   # topic -> {partition: last offset}


def encode(snap: Snapshot, level: int = 3) -> bytes:
    head = orjson.dumps({"tag": snap.tag, "saved_ms": snap.saved_ms,
                         "offsets": {t: {str(p): o for p, o in parts.items()}
                                     for t, parts in snap.offsets.items()}})
    return MAGIC + _HLEN.pack(len(head)) + head + zlib.compress(snap.payload, level)


def decode(data: bytes, mtime_ms: int = 0) -> Snapshot:
    """A snapshot from its bytes; the earlier file format (version tag + raw dump) is read
    with the file's modification time as its save time."""
    if data[:4] != MAGIC:
        (tag,) = _OLD_TAG.unpack_from(data)
        return Snapshot(tag, mtime_ms, data[4:])
    (n,) = _HLEN.unpack_from(data, 4)
    head = orjson.loads(data[8:8 + n])
    offsets = {t: {int(p): o for p, o in parts.items()} for t, parts in head["offsets"].items()}
    return Snapshot(head["tag"], head["saved_ms"], zlib.decompress(data[8 + n:]), offsets)


def newest(tag: int, *candidates: Snapshot | None) -> Snapshot | None:
    """The most recent snapshot of this detector version among the candidates."""
    ok = [c for c in candidates if c is not None and c.tag == tag]
    return max(ok, key=lambda c: c.saved_ms, default=None)


def now_ms() -> int:
    return int(time.time() * 1000)


class CheckpointTopic:
    """The compacted topic of global-model snapshots, keys ``<app_id>/<model>``."""

    def __init__(self, settings, timeout_s: float = 10.0):
        from pipeline.kafka_options import kafka_python_options
        self.topic = settings.topic_checkpoints
        self.prefix = settings.app_id + "/"
        self.cfg = kafka_python_options(settings)
        self.timeout_s = timeout_s
        self._producer = None

    def key(self, name: str) -> bytes:
        return (self.prefix + name).encode()

    def ensure(self) -> None:
        """Create the topic (compacted, large messages) unless it exists."""
        import kafka
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError
        admin = KafkaAdminClient(**self.cfg, client_id="coverwatch-checkpoints",
                                 request_timeout_ms=int(self.timeout_s * 1000))
        try:
            if self.topic in set(admin.list_topics()):
                return
            if int(kafka.__version__.split(".")[0]) >= 3:
                new = {self.topic: {"num_partitions": 1, "replication_factor": 1,
                                    "configs": TOPIC_CONFIG}}
            else:
                new = [NewTopic(self.topic, 1, 1, topic_configs=TOPIC_CONFIG)]
            try:
                admin.create_topics(new)
                log.info("created checkpoint topic %s %s", self.topic, TOPIC_CONFIG)
            except TopicAlreadyExistsError:
                pass
        finally:
            admin.close()

    def latest(self, names: list[str], window: int = 16) -> dict[str, bytes]:
        """The newest record of each named model, reading backwards from the end in
        windows until every name is found or the topic's start is reached."""
        from kafka import KafkaConsumer, TopicPartition
        tp = TopicPartition(self.topic, 0)
        want = {self.key(n): n for n in names}
        found: dict[str, bytes] = {}
        c = KafkaConsumer(**self.cfg, group_id=None, enable_auto_commit=False,
                          max_partition_fetch_bytes=MAX_BYTES, fetch_max_bytes=MAX_BYTES,
                          request_timeout_ms=max(30_000, int(self.timeout_s * 1000) + 1000))
        try:
            c.assign([tp])
            begin = c.beginning_offsets([tp])[tp]
            hi = c.end_offsets([tp])[tp]
            deadline = time.monotonic() + self.timeout_s * 3
            while hi > begin and len(found) < len(want):
                lo = max(begin, hi - window)
                newest_here: dict[str, bytes] = {}
                c.seek(tp, lo)
                while c.position(tp) < hi:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"reading {self.topic} took too long")
                    for msg in c.poll(timeout_ms=1000).get(tp, []):
                        if msg.offset < hi and msg.key in want and msg.value is not None:
                            newest_here[want[msg.key]] = msg.value
                for name, value in newest_here.items():
                    found.setdefault(name, value)
                hi, window = lo, window * 2
        finally:
            c.close()
        return found

    def put(self, name: str, value: bytes) -> None:
        """Send one snapshot; the producer's own thread delivers it (the next save retries
        if this one is lost with the process)."""
        if self._producer is None:
            from kafka import KafkaProducer
            # max_block_ms: a broker outage must not hold the detector thread for a minute
            self._producer = KafkaProducer(**self.cfg, acks="all", linger_ms=0,
                                           max_request_size=MAX_BYTES,
                                           max_block_ms=2000)
        self._producer.send(self.topic, key=self.key(name), value=value)

    def flush(self, timeout_s: float = 30.0) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=timeout_s)
