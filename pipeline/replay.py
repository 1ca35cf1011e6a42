"""Offline replay: the same core as the worker over JSONL / JSONL.gz files, no Kafka.

Events are read from every file, rejected lines are counted with their reason, and the rest
run through :class:`pipeline.process.Processor` in event-time order (stable for ties), in
batches, exactly as the worker batches them. Alerts go to ``--alerts-out`` as JSONL and,
unless ``--no-clickhouse``, events and alerts go to ClickHouse with dedup tokens derived
from the batch contents, so replaying the same files twice adds no rows.
"""
from __future__ import annotations

import gc
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Iterator

import orjson

from pipeline import build, jsonl
from pipeline.adapters import native
from pipeline.contracts.alerts import Alert
from pipeline.contracts.events import Event, Rejected, validate
from pipeline.detect import DETECTOR_VERSION
from pipeline.ingest import accept
from pipeline.process import Processor
from pipeline.progress import progress as progress_bar
from pipeline.settings import Settings
from pipeline.sinks.clickhouse import token


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector (if on) while a large, acyclic structure grows.

    Each collector pass walks every object built so far: a third of the read time in
    :func:`read_events`, whose events hold no reference cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_events(paths, embedding_dim: int | None, adapter=native
                ) -> tuple[list[Event], Counter]:
    """All events of ``paths`` in event-time order, and the rejected lines counted by reason
    (through :func:`accept`, the worker's front door)."""
    events: list[Event] = []
    rejected: Counter = Counter()
    if hasattr(adapter, "offline"):
        adapter.offline()        # halves of one call may be in different files: wait for all
    with gc_paused():
        for line in jsonl.lines(paths):
            accepted, bad = accept(line, adapter, embedding_dim)
            events += accepted
            for _, r in bad:
                rejected[r.reason] += 1
        if hasattr(adapter, "flush"):
            for rec in adapter.flush():
                try:
                    events.append(validate(rec, embedding_dim=embedding_dim))
                except Rejected as r:
                    rejected[r.reason] += 1
    events.sort(key=attrgetter("ts_ms"))
    return events, rejected


@dataclass
class ReplayResult:
    events: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    alerts: list[Alert] = field(default_factory=list)
    seconds: float = 0.0


def batches(events: list[Event], size: int) -> Iterator[list[Event]]:
    for i in range(0, len(events), size):
        yield events[i:i + size]


def replay(paths, settings: Settings, *, clickhouse: bool = True, batch: int = 5_000,
           processor: Processor | None = None, progress: bool = False) -> ReplayResult:
    """Replay ``paths``; ``progress`` draws a bar on stderr when it is a terminal."""
    t0 = time.perf_counter()
    events, rejected = read_events(paths, settings.embedding_dim, build.adapter(settings))
    proc = processor or build.processor(settings)[0]
    sink = build.sink(settings) if clickhouse else None
    result = ReplayResult(rejected=rejected)
    bar = progress_bar(total=len(events), desc="replay", unit="ev",
                       enabled=None if progress else False)
    gc.freeze()   # the events live to the end: later collector passes need not re-walk them
    try:
        for i, chunk in enumerate(batches(events, batch)):
            kept, scored, alerts, failed = proc.process_safely(chunk)
            if failed:
                result.rejected["internal_error"] += len(failed)
            for a in alerts:
                a.stamped(DETECTOR_VERSION)
            result.alerts += alerts
            result.events += len(kept)
            if sink is not None:
                sink.write(kept, scored, alerts,
                           token("replay", chunk[0].event_id, chunk[-1].event_id, len(chunk)),
                           max_wait_s=60)
            bar.update(len(chunk))
            if i % 20 == 0:
                bar.set_postfix(alerts=len(result.alerts), refresh=False)
    finally:
        bar.close()
        gc.unfreeze()
    result.duplicates = proc.duplicates
    result.seconds = time.perf_counter() - t0
    return result


def write_alerts(alerts: list[Alert], out: str) -> None:
    with open(out, "wb") as fh:
        for a in alerts:
            fh.write(orjson.dumps(a.to_dict()) + b"\n")
