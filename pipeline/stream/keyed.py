"""Keyed input (``COVERWATCH_INPUT_KEYED=1``) read by a plain consumer, not by a Faust agent.

When ``api-logs`` is already keyed by tenant there is no repartition hop, and the detect
stage reads the raw API-log records. Read through a Faust agent, each of those small
records paid Faust's per-message machinery (message object, event, stream buffer, ack,
sensors) on the event loop, in series with detection: keyed input ran at 0.41-0.43 of the
default path with provided embeddings. :class:`KeyedSource` reads them the way the ingest
stage (:mod:`pipeline.stream.repartition`) does, in polls of thousands, and hands each
bounded group to the same ``detect_group`` as the default agent (:func:`BatchCore.run`,
then :func:`pipeline.stream.batch.deliver`).

Co-partitioning. The tenant-state table stays Faust's: Faust assigns its changelog
partitions to the workers of the group and recovers them after a rebalance. The source uses
*manual* assignment: it reads exactly the ``api-logs`` partitions whose numbers are the
table changelog partitions Faust made active on this worker, so a tenant's input and its
state stay in one process. On a Faust rebalance (:meth:`KeyedSource.rebalancing`, called
from the revoke signal) it finishes the batch in flight, stops reading, and once Faust has
recovered the table (``app.rebalancing`` false again) it assigns the new active partitions
and resumes from the committed offsets. Every tenant of the previous assignment is
forgotten, so a partition that came back is restored from the table, never from stale
memory. Both topics must have the same number of partitions: :func:`check_partitions`
refuses to start otherwise.

Delivery is at-least-once, by the rules of :mod:`pipeline.stream.batch`: a group's offsets
are committed to the consumer group ``<app_id>-keyed`` (:meth:`KeyedSource.commit`, the
last step of ``deliver``) only after its ClickHouse store, and after the Faust producer was
flushed, so the group's tenant states (and alerts, dead letters) are on the broker (a
task of its own flushes and commits while the next group is detected; a rebalance waits for
it). A restart resumes from those offsets; what it re-reads is skipped by tenant position or not
stored twice (dedup tokens, the redelivery guard).

Memory: a poll returns at most ``KEYED_GROUPS`` x :data:`GROUP_BYTES` of records (the fetch
size) and is detected in groups of at most :data:`GROUP_BYTES`, like the default agent's
batch groups.

Weak point: these commits, and the table writes before them, are not fenced by a group
generation (Faust's own commits are). A worker that stalls past its session loses its
partitions; when it wakes it finishes the group in flight: its tenant states may reach the
changelog after the new owner restored them, and overwrite newer ones there, and its
offsets may overwrite the new owner's commit (both heal with the next writes of those
tenants and the next commit, but a restart in between restores the stale state).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from pipeline.kafka_options import aiokafka_options
from pipeline.settings import Settings
from pipeline.stream.batch import GROUP_BYTES, Record, groups
from pipeline.stream.metrics import consumer_lag

log = logging.getLogger("coverwatch.keyed")

KEYED_GROUPS = 5            # a poll holds at most this many groups of GROUP_BYTES
POLL_WITHIN_MS = 100        # an idle poll returns after this; a busy one at once


def changelog_topic(s: Settings) -> str:
    """The tenant-state table's changelog (Faust's name for it)."""
    return f"{s.app_id}-tenant-state-changelog"


async def partition_counts(s: Settings, topics: list[str]) -> dict[str, int | None]:
    """Partitions of each topic (None: the topic does not exist), from cluster metadata
    (a metadata request for all topics, which never auto-creates one)."""
    from aiokafka import AIOKafkaClient
    client = AIOKafkaClient(**aiokafka_options(s))
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
        out = {}
        for t in topics:
            parts = cluster.partitions_for_topic(t)
            out[t] = None if parts is None else len(parts)
        return out
    finally:
        await client.close()


def mismatch(logs: str, n_logs: int | None, changelog: str, n_changelog: int | None,
             partitions: int) -> str | None:
    """Why keyed input cannot start, or None. A topic not created yet gets ``partitions``.

    >>> mismatch("api-logs", 4, "cl", None, 4) is None
    True
    >>> print(mismatch("api-logs", 3, "cl", 4, 4))  # doctest: +ELLIPSIS
    COVERWATCH_INPUT_KEYED=1: topic api-logs has 3 partitions but the tenant-state ...
    """
    n_logs = partitions if n_logs is None else n_logs
    n_changelog = partitions if n_changelog is None else n_changelog
    if n_logs == n_changelog:
        return None
    return (f"COVERWATCH_INPUT_KEYED=1: topic {logs} has {n_logs} partitions but the "
            f"tenant-state changelog {changelog} has {n_changelog}: keyed input reads the "
            f"input partitions whose numbers are this worker's table partitions, so the two "
            f"must match (set TOPIC_PARTITIONS to the input's count on a new app id, or run "
            f"with COVERWATCH_INPUT_KEYED=0)")


def check_partitions(s: Settings) -> None:
    """Refuse to start keyed input when ``api-logs`` and the changelog differ in partition
    count (:func:`mismatch`); create ``api-logs`` with ``TOPIC_PARTITIONS`` partitions when
    it does not exist yet (as Faust did when an agent read it)."""
    changelog = changelog_topic(s)
    counts = asyncio.run(partition_counts(s, [s.topic_logs, changelog]))
    why = mismatch(s.topic_logs, counts[s.topic_logs], changelog, counts[changelog],
                   s.partitions)
    if why:
        raise SystemExit(why)
    if counts[s.topic_logs] is None:
        asyncio.run(_create(s, s.topic_logs, s.partitions))


async def _create(s: Settings, topic: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError
    admin = AIOKafkaAdminClient(**aiokafka_options(s))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, -1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


class KeyedSource:
    """Manual-assignment consumer of ``api-logs`` for the detect stage (see the module).

    ``app``: the Faust app (its assignor says which table partitions are active here, its
    producer is flushed before a commit); ``detect(records)`` runs one group through the
    batch core and delivers it (``deliver`` ends with :meth:`commit`); ``forget(partitions)``
    drops the live tenants of partitions before a new assignment.
    """

    def __init__(self, s: Settings, app, detect: Callable[[list[Record]], Awaitable[None]],
                 forget: Callable[[set[int]], None], after_poll=None):
        self.s = s
        self.app = app
        self.detect = detect
        self.forget = forget
        self.after_poll = after_poll
        self.changelog = changelog_topic(s)
        self.consumer = None
        self.partitions: set[int] = set()     # api-logs partitions read now
        self.generation = 0                   # Faust rebalances seen
        self._applied = -1                    # the generation the assignment follows
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending: dict[int, int] = {}    # delivered, not committed: partition -> next
        self._wake = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self.read: dict = {}                  # TopicPartition -> last offset detected

    async def rebalancing(self) -> None:
        """A Faust rebalance began: stop reading, and return once the group in flight was
        delivered and committed (its table writes went to partitions still ours)."""
        self.generation += 1
        await self._idle.wait()
        await self._flush_and_commit()

    async def commit(self, offsets: dict[int, int]) -> None:
        """The last step of a group's ``deliver``: its rows are stored and its tenant states
        handed to the Faust producer. The committer task (:meth:`_committer`) flushes the
        producer, then commits, while the next group is detected."""
        self._pending.update(offsets)
        self._wake.set()

    async def _committer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush_and_commit()

    async def _flush_and_commit(self) -> None:
        """Commit the delivered groups' offsets once the producer holds nothing of them:
        tenant states, alerts, dead letters and summaries are on the broker first."""
        from aiokafka import TopicPartition
        async with self._commit_lock:
            offsets, self._pending = self._pending, {}
            if not offsets:
                return
            try:
                await self.app.producer.flush()
                await self.consumer.commit({TopicPartition(self.s.topic_logs, p): o
                                            for p, o in offsets.items()})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - re-read after a restart: idempotent
                log.warning("keyed commit failed (%s); the groups may be re-delivered", exc)

    def lag(self) -> int:
        """Messages behind the high watermark on the partitions read now."""
        c = self.consumer
        if c is None:
            return 0
        parts = list(c.assignment())
        return sum(consumer_lag(parts, c.highwater, lambda tp: (
            self.read[tp] + 1 if tp in self.read else None)).values())

    def _actives(self) -> set[int]:
        return {tp.partition for tp in self.app.assignor.assigned_actives()
                if tp.topic == self.changelog}

    async def _reassign(self) -> None:
        """After a rebalance and Faust's table recovery: read this worker's active table
        partitions from the committed offsets."""
        from aiokafka import TopicPartition
        gen = self.generation
        await self._flush_and_commit()   # resume after every delivered group
        while self.app.rebalancing:
            await asyncio.sleep(0.05)
            if gen != self.generation:
                return
        actives = self._actives()
        self.forget(self.partitions | actives)
        self.read = {}
        # aiokafka fetches the group's committed offsets for a new assignment (earliest
        # where none): re-reading from there is what the at-least-once rules expect
        self.consumer.assign([TopicPartition(self.s.topic_logs, p) for p in sorted(actives)])
        self.partitions = actives
        self._applied = gen
        log.info("keyed input: reading %s partitions %s (generation %d)",
                 self.s.topic_logs, sorted(actives), gen)

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer
        s = self.s
        self.consumer = c = AIOKafkaConsumer(
            group_id=f"{s.app_id}-keyed", enable_auto_commit=False,
            auto_offset_reset="earliest", max_partition_fetch_bytes=GROUP_BYTES,
            fetch_max_bytes=KEYED_GROUPS * GROUP_BYTES, **aiokafka_options(s))
        await c.start()
        committer = asyncio.ensure_future(self._committer())
        try:
            while True:
                if self._applied != self.generation or self.app.rebalancing:
                    await self._reassign()
                    if self._applied != self.generation:
                        continue
                if not self.partitions:
                    await asyncio.sleep(0.1)
                    continue
                batches = await c.getmany(timeout_ms=POLL_WITHIN_MS, max_records=s.sink_batch)
                if self._applied != self.generation:
                    continue   # a rebalance began during the poll: re-read after it
                recs = [Record(tp.partition, m.offset, m.value, m.key, m.timestamp / 1000)
                        for tp, ms in batches.items() for m in ms]
                if not recs:
                    continue
                self._idle.clear()
                try:
                    for group in groups(recs):
                        await self.detect(group)
                    for tp, ms in batches.items():
                        self.read[tp] = ms[-1].offset
                    if self.after_poll is not None:
                        await self.after_poll()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - nothing more committed: read it again
                    log.exception("keyed batch failed; reading from the committed offsets")
                    await asyncio.sleep(1.0)
                    self._applied = -1
                finally:
                    self._idle.set()
        finally:
            committer.cancel()
            await c.stop()
