"""The ingest stage: ``api-logs`` in batches -> validated events on the internal topic.

Faust hands an agent one message at a time (message object, event, stream buffer, ack,
sensors): ~150 µs of the event loop per message, more than validating and detecting it.
This stage is stateless, so it does not need Faust's co-partitioning: a plain aiokafka
consumer group (``<app_id>-ingest``) inside the worker polls thousands of messages at once,
validates them off the loop, and produces one internal message per destination partition
(keyed by tenant through :func:`partition_for`, the repartition) plus the dead letters.

Delivery stays at-least-once: a batch's source offsets are committed only after every
internal and dead-letter message of it was acknowledged by the broker. A crash or rebalance
in between re-sends the batch; the detect stage drops re-sent events by event id, and the
ClickHouse tables keep one row per event (ReplacingMergeTree, read with FINAL).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from typing import Callable, Iterator

import orjson

from pipeline import build
from pipeline.contracts.events import ms_to_iso
from pipeline.ingest import accept
from pipeline.kafka_options import aiokafka_options
from pipeline.settings import Settings
from pipeline.stream.codec import encode_batch, partition_for
from pipeline.stream.metrics import consumer_lag

log = logging.getLogger("coverwatch.ingest")

DLQ_ORIGINAL_MAX = 1_048_576
CHUNK_BYTES = 4 * 1024 * 1024       # internal messages stay well under INTERNAL_MAX_BYTES
POLL_WITHIN_MS = 100                # an idle poll returns after this; a busy one at once


def chunks(events: list, limit: int = CHUNK_BYTES) -> Iterator[list]:
    """Split one partition's events into internal messages of about ``limit`` bytes."""
    chunk, size = [], 0
    for e in events:
        est = 200 + len(e.prompt or "") * 4 + (0 if e.embedding is None else 4 * len(e.embedding))
        if chunk and size + est > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(e)
        size += est
    if chunk:
        yield chunk


def dlq_record(raw: bytes, reason: str, detail: str, topic: str, partition: int,
               offset: int) -> bytes:
    """What the dead-letter topic keeps: why, where from, and the original bytes.

    Originals over 1 MiB are cut there (with their size and SHA-256): the full message
    stays in the source topic at ``topic/partition/offset`` for its retention.
    """
    body = raw[:DLQ_ORIGINAL_MAX]
    try:
        original, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        original, encoding = base64.b64encode(body).decode(), "base64"
    record = {"reason": reason, "detail": detail, "topic": topic, "partition": partition,
              "offset": offset, "rejected_at": ms_to_iso(int(time.time() * 1000)),
              "original": original, "original_encoding": encoding}
    if len(raw) > DLQ_ORIGINAL_MAX:
        record.update(original_truncated=True, original_size=len(raw),
                      original_sha256=hashlib.sha256(raw).hexdigest())
    return orjson.dumps(record)


def validate_batch(records, adapter, embedding_dim: int | None, partitions: int,
                   chunk_bytes: int = CHUNK_BYTES, redact=None
                   ) -> tuple[list[tuple[int, bytes]], list[tuple[bytes | None, bytes]]]:
    """Consumer records -> (internal messages per partition, dead letters). Runs off the loop.

    ``redact`` (a :class:`pipeline.stream.redact.Redactor`) turns the accepted events into
    what the internal topic may carry, before they are encoded."""
    groups: dict[int, list] = {}
    dead, events = [], []
    for rec in records:
        accepted, rejected = accept(rec.value or b"", adapter, embedding_dim)
        for raw, r in rejected:
            dead.append((rec.key, dlq_record(raw, r.reason, r.detail, rec.topic,
                                             rec.partition, rec.offset)))
        events += accepted
    if redact is not None:
        redact(events)
    for e in events:
        groups.setdefault(partition_for(e.tenant_id, partitions), []).append(e)
    out = [(p, encode_batch(chunk)) for p, evs in groups.items()
           for chunk in chunks(evs, chunk_bytes)]
    return out, dead


class Repartitioner:
    """The consume -> validate -> produce -> commit loop; ``send(partition, value,
    produced_ms)`` and ``dead(key, value)`` produce and return delivery futures (the app's
    Faust producer)."""

    def __init__(self, s: Settings, send: Callable, dead: Callable, metrics, executor,
                 redact=None):
        self.s = s
        self.redact = redact
        self.send, self.dead = send, dead
        self.metrics = metrics
        self.executor = executor
        self.adapter = build.adapter(s)
        self.consumer = None
        self.read: dict = {}   # TopicPartition -> last offset handed to validation

    async def lag(self) -> int:
        """Messages behind the high watermark on this worker's ``api-logs`` partitions.

        Counted from the last offset handed to validation, or, before this worker has read
        anything from a partition, from the consumer's position (the committed offset after
        a restart): a restarted worker with nothing to read is 0 behind, not a whole topic.
        """
        c = self.consumer
        if c is None:
            return 0
        parts = list(c.assignment())
        nxt = {tp: self.read[tp] + 1 for tp in parts if tp in self.read}
        for tp in parts:
            if tp not in nxt:
                try:
                    nxt[tp] = await asyncio.wait_for(c.position(tp), 1.0)
                except Exception:  # noqa: BLE001 - position not known yet: say nothing
                    pass
        return sum(consumer_lag(parts, c.highwater, nxt.get).values())

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer
        s = self.s
        self.consumer = c = AIOKafkaConsumer(
            s.topic_logs, group_id=f"{s.app_id}-ingest", enable_auto_commit=False,
            auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 2**20,
            fetch_max_bytes=64 * 2**20, session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000, **aiokafka_options(s))
        await c.start()
        loop = asyncio.get_running_loop()
        try:
            while True:
                batches = await c.getmany(timeout_ms=POLL_WITHIN_MS, max_records=s.sink_batch)
                records = [r for recs in batches.values() for r in recs]
                if not records:
                    continue
                for tp, recs in batches.items():
                    self.read[tp] = recs[-1].offset
                try:
                    await self._forward(loop, records)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - nothing committed: read the batch again
                    log.exception("ingest batch failed; reading it again")
                    await asyncio.sleep(1.0)
                    for tp, recs in batches.items():
                        if tp in c.assignment():
                            c.seek(tp, recs[0].offset)
                    continue
                offsets = {tp: recs[-1].offset + 1 for tp, recs in batches.items()}
                try:
                    await c.commit(offsets)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - rebalance: the next owner re-reads
                    log.warning("ingest commit failed (%s); batch may be re-delivered", exc)
        finally:
            await c.stop()

    async def _forward(self, loop, records) -> None:
        s = self.s
        out, dead = await loop.run_in_executor(
            self.executor, validate_batch, records, self.adapter, s.embedding_dim, s.partitions,
            CHUNK_BYTES, self.redact)
        # the oldest record's produce time rides along, for the produce-to-stored histogram
        produced = str(min(r.timestamp for r in records)).encode()
        futures = [await self.dead(key, value) for key, value in dead]
        futures += [await self.send(p, value, produced) for p, value in out]
        await asyncio.gather(*futures)
        self.metrics.events_in += len(records)
        self.metrics.dlq += len(dead)
