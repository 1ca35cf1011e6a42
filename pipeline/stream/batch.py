"""The detect stage's batch logic as a plain object: consumed records in, writes out.

The Faust agent (:mod:`pipeline.stream.app`) only moves bytes: it hands :meth:`BatchCore.run`
a batch of records, then performs the :class:`Detected` writes through :func:`deliver`. The
rules that make delivery at-least-once without double learning live here, where
:mod:`pipeline.testing.batches` drives them list-in/list-out, with no broker:

- records are internal messages (:func:`internal_messages`, the repartition hop) or, when
  the input topic is already keyed by tenant, raw API-log messages (:func:`keyed_logs`);
- a tenant not live in this worker is restored from the state table first;
- an event at or below the position its tenant has learned up to is skipped (re-delivered
  after a crash or rebalance: the detector has it already);
- a message that does not decode, or an event the detector fails on, becomes a dead letter,
  and the batch goes on (it is committed like any other);
- :func:`deliver` writes dead letters, the ClickHouse rows (one dedup token per offset
  range, so a re-delivered batch adds no rows), alerts, tenant states and summaries, and
  only then commits the offsets. A crash anywhere before the commit re-delivers the batch:
  rows and alerts are idempotent, and the states say what was learned.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import orjson

from pipeline.contracts.alerts import Alert
from pipeline.contracts.events import Event
from pipeline.detect import DETECTOR_VERSION
from pipeline.ingest import accept
from pipeline.process import Processor
from pipeline.sinks.clickhouse import token
from pipeline.stream.codec import decode_batch, partition_for
from pipeline.stream.repartition import dlq_record
from pipeline.stream.state import Checkpoints

log = logging.getLogger("coverwatch.worker")

Dead = tuple[bytes | None, bytes]   # (key, dead-letter record)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, as the core needs it (what a Kafka record carries);
    ``produced``: when its source record was produced (s), for the latency histogram."""

    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    produced: float | None = None


def internal_messages(topic: str) -> Callable[[Record], tuple[list[Event], list[Dead]]]:
    """Records of the internal topic (many validated events each, see
    :mod:`pipeline.stream.codec`); one that does not decode is a dead letter."""
    def decode(r: Record):
        try:
            return decode_batch(r.value), []
        except Exception as exc:  # noqa: BLE001 - a poison message must not stop the stream
            return [], [(r.key, dlq_record(r.value, "internal_error",
                                           f"undecodable: {exc!r}"[:300], topic, r.partition,
                                           r.offset))]
    return decode


def keyed_logs(adapter, embedding_dim: int | None, partitions: int, topic: str
               ) -> Callable[[Record], tuple[list[Event], list[Dead]]]:
    """Raw API-log records of a topic already keyed by tenant (``COVERWATCH_INPUT_KEYED``),
    validated here as ingest would. An event whose tenant belongs to another partition is a
    dead letter: its tenant's state lives with that partition, and positions of two
    partitions cannot be compared, so learning it here could skip or repeat events."""
    def decode(r: Record):
        accepted, rejected = accept(r.value or b"", adapter, embedding_dim)
        dead = [(r.key, dlq_record(raw, rej.reason, rej.detail, topic, r.partition, r.offset))
                for raw, rej in rejected]
        events = []
        for e in accepted:
            home = partition_for(e.tenant_id, partitions)
            if home == r.partition:
                events.append(e)
            else:
                dead.append((r.key, dlq_record(
                    r.value, "internal_error", f"tenant {e.tenant_id!r} belongs to partition "
                    f"{home}, not {r.partition}: the input topic is not keyed by tenant",
                    topic, r.partition, r.offset)))
        return events, dead
    return decode


@dataclass(slots=True)
class Detected:
    """What one batch leaves to be written, in the order :func:`deliver` writes it."""

    dead: list[Dead] = field(default_factory=list)
    kept: list[Event] = field(default_factory=list)                  # rows for ClickHouse
    scored: Sequence = ()
    alerts: list[Alert] = field(default_factory=list)
    dedup: str = ""                                                  # the rows' dedup token
    states: list[tuple[bytes, bytes | None]] = field(default_factory=list)  # None: delete
    summaries: list[dict] = field(default_factory=list)              # -> the campaign stage
    offsets: dict[int, int] = field(default_factory=dict)            # partition -> next offset
    produced: list[float] = field(default_factory=list)              # source produce times (s)
    skipped: int = 0                                                 # re-deliveries not learned


class Continuity:
    """Hands the detect agent each partition's records in offset order, none skipped.

    Faust's consumer can skip records of a partition around a rebalance or recovery: a
    record that reaches the stream while flow is suspended, or fetched in an older
    generation, is dropped *and acknowledged*, and records fetched again after the
    recovery's seek are dropped as already read when a fetch ran ahead of that seek
    (faust-streaming: ``Stream._py_aiter``, ``Consumer._drain_messages``). Their events
    would be neither detected nor stored: the fault suite's restarts lost one internal
    message each time (30 events in one CI run, 427 in another).

    The internal topic's offsets are dense (not compacted, not transactional), so a record
    past a partition's next expected offset means records were skipped. That partition's
    records are held back and the caller rewinds it to the first missing offset: learning
    the later records first would make the core skip the missing ones as already learned.
    The expected offset starts at what the group had committed when the partition was
    assigned (:meth:`start`); without it, at the first record seen.

    >>> c = Continuity()
    >>> c.start({0: 5})
    >>> [r.offset for r in c.admit([Record(0, 5, b""), Record(0, 6, b""), Record(1, 2, b"")])[0]]
    [5, 6, 2]
    >>> admitted, rewind = c.admit([Record(0, 9, b""), Record(1, 3, b""), Record(0, 7, b"")])
    >>> [(r.partition, r.offset) for r in admitted], rewind
    ([(1, 3)], {0: 7})
    >>> c.admit([Record(0, 7, b""), Record(0, 4, b"")])[1]      # in order again; 4 re-delivered
    {}
    """

    # A partition rewound this many times in a row to the same offset gives up waiting
    # (the records are gone, e.g. deleted by retention) and goes on from what it gets. Each
    # batch of records read ahead before a rewind is held back and rewinds again: one poll
    # of 500 records in batches of 16 is 32 rewinds before the records come again.
    MAX_REWINDS = 500

    def __init__(self):
        self.next: dict[int, int] = {}
        self._rewinds: dict[int, tuple[int, int]] = {}   # partition -> (offset, times)
        self.given_up: list[tuple[int, int, int]] = []   # (partition, missing from, to): log
        self._waiting: dict[int, int] = {}               # partition -> next, behind its HW

    def start(self, offsets: dict[int, int]) -> None:
        """The next offsets to expect for newly assigned partitions."""
        self.next.update(offsets)
        for p in offsets:
            self._rewinds.pop(p, None)

    def admit(self, records: Sequence[Record]) -> tuple[list[Record], dict[int, int]]:
        """(records to detect, {partition: offset to rewind it to})."""
        admitted: list[Record] = []
        rewind: dict[int, int] = {}
        for r in records:
            p = r.partition
            if p in rewind:
                continue
            want = self.next.get(p)
            if want is not None and r.offset > want:
                at, times = self._rewinds.get(p, (want, 0))
                times = times + 1 if at == want else 1
                self._rewinds[p] = (want, times)
                if times <= self.MAX_REWINDS:
                    rewind[p] = want
                    continue
                self.given_up.append((p, want, r.offset - 1))
            admitted.append(r)
            if want is None or r.offset >= want:
                self.next[p] = r.offset + 1
                self._rewinds.pop(p, None)
        return admitted, rewind

    def stalled(self, highwaters: dict[int, int]) -> dict[int, int]:
        """Partitions to rewind because records below their high watermark have not
        come since the previous call, with nothing else of theirs to reveal the gap (the
        skipped records were the last ones sent). Call it every few seconds.

        >>> c = Continuity(); c.start({0: 7, 1: 3})
        >>> c.stalled({0: 9, 1: 3}), c.stalled({0: 9, 1: 3})
        ({}, {0: 7})
        """
        out = {p: want for p, want in self.next.items()
               if highwaters.get(p, 0) > want and self._waiting.get(p) == want}
        self._waiting = {p: want for p, want in self.next.items()
                         if highwaters.get(p, 0) > want}
        return out

    def forget(self, partitions: set[int]) -> None:
        """Partitions that left this worker."""
        for p in partitions:
            self.next.pop(p, None)
            self._rewinds.pop(p, None)
            self._waiting.pop(p, None)


def offset_ranges(records: Sequence[Record]) -> list[tuple[int, int, int]]:
    """(partition, first, last offset) per partition of a batch: what a dedup token names."""
    ranges: dict[int, list[int]] = {}
    for r in records:
        lo_hi = ranges.setdefault(r.partition, [r.offset, r.offset])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], r.offset), max(lo_hi[1], r.offset)
    return sorted((p, a, b) for p, (a, b) in ranges.items())


# A detect batch is up to 64 internal messages, each up to one ingest poll's events of a
# partition: under a backlog, tens of thousands of events, and in a long tail as many new
# tenants, all live at once whatever the ceiling (85,750 live over a ceiling of 20,000 and a
# 4.7 GB worker in tests/test_faults_tenants.py). The agent runs a batch in groups of at
# most this many bytes of internal messages (about 10,000 events with their vectors).
GROUP_BYTES = 16 * 1024 * 1024


def groups(records: Sequence[Record], limit: int = GROUP_BYTES) -> list[list[Record]]:
    """``records`` in order, in runs of at most ``limit`` bytes of values (at least one
    record each): each run is detected, delivered and stored as a batch of its own.

    >>> [len(g) for g in groups([Record(0, i, b"x" * 40) for i in range(5)], limit=100)]
    [2, 2, 1]
    """
    out: list[list[Record]] = []
    size = 0
    for r in records:
        n = len(r.value or b"")
        if not out or size + n > limit:
            out.append([])
            size = 0
        out[-1].append(r)
        size += n
    return out


class BatchCore:
    """Restore, skip, detect, checkpoint: one batch of records at a time.

    ``table_get(key) -> bytes | None`` reads the tenant-state table (keys are tenant ids as
    bytes); the writes come back in :attr:`Detected.states`, so the caller owns the table.
    ``decode``: :func:`internal_messages` of ``topic`` unless given; ``redact`` (a
    :class:`pipeline.stream.redact.Redactor`) runs on the events to learn when the records
    were not redacted on the way in (keyed input).
    """

    def __init__(self, processor: Processor, checkpoints: Checkpoints, table_get,
                 topic: str, decode=None, redact=None):
        self.processor = processor
        self.checkpoints = checkpoints
        self.table_get = table_get
        self.topic = topic
        self.decode = decode or internal_messages(topic)
        self.redact = redact

    def _load(self, decoded: Sequence[tuple[Record, list[Event]]], expired: set[str],
              out: Detected) -> list[Event]:
        """Restore unknown tenants, drop already-learned events."""
        cp, todo = self.checkpoints, []
        for r, events in decoded:
            for i, e in enumerate(events):
                if not cp.known(e.tenant_id):
                    cp.restore(e.tenant_id, None if e.tenant_id in expired
                               else self.table_get(e.tenant_id.encode()), e.ts_ms)
                pos = (r.partition, (r.offset << 16) | i)
                if cp.already_learned(e.tenant_id, pos):
                    out.skipped += 1
                    continue
                e.extra["pos"] = pos
                todo.append(e)
        if self.redact is not None:
            self.redact(todo)
        return todo

    def run(self, records: Sequence[Record]) -> Detected:
        """Evict idle tenants (and, beyond the ceiling, as many as this batch brings), then
        detect a batch; the table must already hold every earlier batch's states (the caller
        delivered them)."""
        cp, out = self.checkpoints, Detected()
        decoded = []
        for r in records:
            events, dead = self.decode(r)
            out.dead += dead
            decoded.append((r, events))
        # room for the tenants this batch brings, so live ones stay under the ceiling
        incoming = {e.tenant_id for _, events in decoded for e in events
                    if not cp.known(e.tenant_id)}
        expired = set(cp.evict(room=len(incoming)))
        out.kept, out.scored, out.alerts, failed = self.processor.process_safely(
            self._load(decoded, expired, out))
        for e, err in failed:
            partition, position = e.extra["pos"]
            out.dead.append((e.tenant_id.encode(), dlq_record(
                orjson.dumps(e.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY),
                "internal_error", err, self.topic, partition, position >> 16)))
        for a in out.alerts:
            a.stamped(DETECTOR_VERSION)
        for tenant, pos in cp.touched(out.kept):
            value = cp.encode(tenant, pos[1])
            if value is not None:
                out.states.append((tenant.encode(), value))
        written = {key for key, _ in out.states}
        out.states += [(t.encode(), None) for t in sorted(expired) if t.encode() not in written]
        out.summaries = self.processor.drain_summaries()
        out.dedup = token(self.topic, *offset_ranges(records))
        out.offsets = {p: last + 1 for p, _, last in offset_ranges(records)}
        out.produced = [r.produced for r in records if r.produced is not None]
        return out


class Outputs(Protocol):
    """Where a batch's writes go: the Faust app's topics, table and sink, or the test kit's
    lists. Each call returns when the write is done (or, for a topic, handed over)."""

    async def dead_letter(self, key: bytes, value: bytes) -> None: ...
    async def store(self, batch: Detected) -> None: ...
    async def alert(self, alert: Alert) -> None: ...
    async def state(self, key: bytes, value: bytes | None) -> None: ...
    async def summary(self, summary: dict) -> None: ...
    async def commit(self, offsets: dict[int, int]) -> None: ...


async def deliver(batch: Detected, out: Outputs) -> None:
    """One batch's writes, in the order at-least-once needs: everything the batch produced
    is written before its offsets are committed, and rows before the states that say they
    were learned."""
    for key, value in batch.dead:
        await out.dead_letter(key, value)
    await out.store(batch)
    for a in batch.alerts:
        await out.alert(a)
    for key, value in batch.states:
        await out.state(key, value)
    for s in batch.summaries:
        await out.summary(s)
    await out.commit(batch.offsets)


async def deliver_until_done(batch: Detected, out: Outputs, pause_s: float = 1.0,
                             max_pause_s: float = 30.0) -> None:
    """:func:`deliver`, again and again until every write of the batch went through.

    A batch is detected once: its tenants have learned it and its event ids are marked
    seen, so the only safe way past a failed write (a broker leader moving after a
    restart, a full producer queue) is to write the same batch again; every write is
    idempotent. Letting the failure out would end the agent's ``take_events`` loop, whose
    clean-up acknowledges the whole Faust batch, detected or not: those events would be
    committed and never stored (the suspected cause of a CI fault run in which a restarted
    worker never stored 427 events; not reproduced in 7 runs since)."""
    while True:
        try:
            await deliver(batch, out)
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - retried, never dropped
            log.exception("writing a detected batch failed; writing it again in %.1f s",
                          pause_s)
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, max_pause_s)
