"""List-in/list-out test kit for the detect stage's batch core (no broker, no ClickHouse).

Bytewax's testing module is the model: a source that is a list, a sink that is a list, and a
runner. Here the source is an internal topic as a list of :class:`Record` (:func:`messages`
encodes events the way ingest does), the sink is :class:`Captured` (every write of
:func:`pipeline.stream.batch.deliver`, in order, plus the state table and the committed
offsets), and :class:`Topic` runs one worker life over them: what a crash loses is the
worker's objects, what it keeps is the table, the committed offsets and what was written.

>>> from pipeline.contracts.events import Event
>>> from pipeline.detect.burst import BurstDetector
>>> topic = Topic(messages([Event(f"e{i}", 1767225600000 + i, "t1") for i in range(6)], 2))
>>> topic.run(topic.core(BurstDetector()))
>>> topic.out.commits, len(topic.out.stored_events), sorted(topic.out.table)
([{0: 1}, {0: 2}, {0: 3}], 6, [b't1'])
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Sequence

from pipeline.contracts.alerts import Alert
from pipeline.contracts.events import Event
from pipeline.process import Processor
from pipeline.stream.batch import BatchCore, Detected, Record, deliver
from pipeline.stream.codec import encode_batch
from pipeline.stream.state import Checkpoints


def messages(events: Sequence[Event], per_message: int = 1, partition: int = 0,
             start: int = 0) -> list[Record]:
    """``events`` as internal messages of one partition, ``per_message`` events each, at
    offsets from ``start`` (ingest packs many events of a partition into one message)."""
    return [Record(partition, start + k, encode_batch(events[i:i + per_message]))
            for k, i in enumerate(range(0, len(events), per_message))]


class Crash(Exception):
    """The worker dies here (raised by :class:`Captured` at the step it was told)."""


class Flaky(Exception):
    """A write that fails and would succeed if tried again (a broker leader moving)."""


@dataclass
class Captured:
    """:class:`pipeline.stream.batch.Outputs` into lists. ``steps`` is every write in order
    as ``(step, batch number)``; ``crash_before`` names a step (``"store"``, ``"alert"``,
    ``"state"``, ``"summary"``, ``"commit"``) at which the first batch numbered
    ``crash_from`` or later to reach it dies. ``flaky`` maps a step to how many times it
    fails (:class:`Flaky`) before it succeeds, the worker living on."""

    table: dict = field(default_factory=dict)          # the tenant-state table
    dead: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    stored: list[Detected] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)
    commits: list[dict[int, int]] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)   # partition -> next offset
    steps: list[tuple[str, int]] = field(default_factory=list)
    crash_before: str | None = None
    crash_from: int = 1
    flaky: dict[str, int] = field(default_factory=dict)
    batch: int = 0

    def _step(self, name: str) -> None:
        if name == self.crash_before and self.batch >= self.crash_from:
            self.crash_before = None
            raise Crash(name)
        if self.flaky.get(name):
            self.flaky[name] -= 1
            raise Flaky(name)
        self.steps.append((name, self.batch))

    @property
    def stored_events(self) -> list[Event]:
        return [e for d in self.stored for e in d.kept]

    async def dead_letter(self, key, value) -> None:
        self._step("dead_letter")
        self.dead.append((key, value))

    async def store(self, d: Detected) -> None:
        self._step("store")
        self.stored.append(d)

    async def alert(self, a: Alert) -> None:
        self._step("alert")
        self.alerts.append(a)

    async def state(self, key: bytes, value: bytes | None) -> None:
        self._step("state")
        if value is None:
            self.table.pop(key, None)
        else:
            self.table[key] = value

    async def summary(self, summary: dict) -> None:
        self._step("summary")
        self.summaries.append(summary)

    async def commit(self, offsets: dict[int, int]) -> None:
        self._step("commit")
        self.commits.append(dict(offsets))
        self.committed.update(offsets)


class Topic:
    """An internal topic and everything that outlives a worker: the table, the committed
    offsets and the writes (:attr:`out`). :meth:`run` is one worker life from the
    committed offsets on; after a :class:`Crash`, :meth:`run` again with a new core is the
    restart."""

    def __init__(self, records: list[Record], data_dir: str = "/nonexistent"):
        self.records = records
        self.data_dir = data_dir
        self.out = Captured()

    def core(self, detector, sketcher=None, decode=None, **checkpoint_options) -> BatchCore:
        """A fresh worker's core over this topic's table (a restart: nothing in memory);
        ``decode``: how records become events (default: internal messages)."""
        processor = Processor(detector, sketcher=sketcher)
        parts = [p for p in (detector, sketcher) if p is not None]
        cp = Checkpoints(parts, self.data_dir, **checkpoint_options)
        return BatchCore(processor, cp, self.out.table.get, "events", decode=decode)

    def pending(self) -> list[Record]:
        """The records a (re)started worker reads: those at or after the committed offsets."""
        return [r for r in self.records if r.offset >= self.out.committed.get(r.partition, 0)]

    def run(self, core: BatchCore, batch: int = 1, crash_before: str | None = None,
            crash_from: int = 1) -> None:
        """Consume every pending record, ``batch`` messages at a time; with
        ``crash_before``, die at that step of the first batch (counted over the topic's
        life) from ``crash_from`` on to reach it (raises :class:`Crash`)."""
        self.out.crash_before, self.out.crash_from = crash_before, crash_from
        todo = self.pending()
        for i in range(0, len(todo), batch):
            self.out.batch += 1
            asyncio.run(deliver(core.run(todo[i:i + batch]), self.out))
