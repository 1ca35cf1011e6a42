"""Where events that never reached ClickHouse went missing, read from the real topics.

A fault scenario that loses events says only how many by default; this follows the lost
events through each hop (api-logs -> ingest -> internal topic -> detect -> ClickHouse) and
reports, per hop, where they sit against where the consumer group resumes (its committed
offset, :func:`pipeline.kafka_io.committed_offsets`): an event
missing from the internal topic was lost by ingest; one sitting below the detect group's
committed offset was acknowledged without being stored; one above it was never delivered.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import orjson

from pipeline.kafka_io import committed_offsets
from pipeline.settings import Settings
from pipeline.stream.codec import decode_batch


def _read(s: Settings, topic: str):
    """Every record of ``topic`` from the beginning (partition, offset, value)."""
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.kafka_options import kafka_python_options
    c = KafkaConsumer(**kafka_python_options(s), group_id=None, enable_auto_commit=False,
                      consumer_timeout_ms=3000)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        for m in c:
            yield m.partition, m.offset, m.value
            if all(c.position(tp) >= ends[tp] for tp in tps):
                break
    finally:
        c.close()


def where_lost(s: Settings, gone: set[str]) -> str:
    """One report line per hop for the event ids in ``gone``."""
    if not gone:
        return "nothing lost"
    lines = []
    try:
        logs = defaultdict(list)
        for p, off, value in _read(s, s.topic_logs):
            try:
                eid = orjson.loads(value).get("event_id")
            except Exception:  # noqa: BLE001 - a malformed line of a scenario
                continue
            if eid in gone:
                logs[p].append(off)
        ingest = committed_offsets(s, f"{s.app_id}-ingest", s.topic_logs)
        lines.append(f"api-logs: ingest committed {ingest}; lost events at "
                     + ", ".join(f"p{p} {min(o)}..{max(o)} ({len(o)})"
                                 for p, o in sorted(logs.items())))
        internal, copies = defaultdict(list), Counter()
        for p, off, value in _read(s, s.topic_events):
            for e in decode_batch(value):
                if e.event_id in gone:
                    internal[p].append(off)
                    copies[e.event_id] += 1
        detect = committed_offsets(s, s.app_id, s.topic_events)
        found = len(copies)
        lines.append(f"internal topic: {found} of {len(gone)} lost events present "
                     f"({sum(copies.values())} copies); detect committed {detect}; at "
                     + ", ".join(f"p{p} offsets {sorted(set(o))[:8]}"
                                 for p, o in sorted(internal.items())))
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the failure
        lines.append(f"(could not read the topics: {exc!r})")
    return "\n".join(lines)
