"""Raw rows exactly once across a SIGKILL: leave out re-delivered events already stored.

Why a dedup token alone is not enough: the token names a *batch* (its partition/offset
ranges), and batches are formed by timing (``take_events(64, within=...)``). A worker
killed after a batch's insert landed but before that batch's tenant state and offsets
reached Kafka gets the same events again after the restart, grouped into other batches:
other ranges, another token, so ClickHouse stored them a second time (FINAL and merges hid
it; raw counts did not).

What is stored in a partition of the internal topic is a prefix of it (batches are stored
in order, one at a time), so only the first batches after a partition is (re)assigned can
repeat stored events. For those, the events already in ClickHouse are looked up and left
out of the insert (the detector still learns them: their state was lost with the worker);
once a batch finds none of a partition's events stored, the partition is clean and costs
nothing more. Alerts are few: every batch's alerts are checked against the stored
(alert_id, version) pairs, which also covers campaign alerts re-raised from re-formed
summary batches.
"""
from __future__ import annotations

from typing import Iterator, Sequence

# ClickHouse refuses a query text above max_query_size (256 KiB by default), and the look-up
# carries its batch's tenant and event ids in the text: a batch of a long tail (thousands of
# distinct tenants) went over it after a restart, and the sink retried the look-up forever
# (tests/test_faults_tenants.py). Look-ups carry at most this many bytes of ids each.
LOOKUP_ID_BYTES = 64 * 1024


def stored_versions(alerts) -> list[tuple[str, int]]:
    """(alert_id, version) as the alerts table stores them (see ``alert_rows``)."""
    return [(a.alert_id, a.events_seen * 1000 + len(a.related_tenants)) for a in alerts]


def partition_of(event) -> int:
    return event.extra["pos"][0]


def keep_unstored(events: Sequence, stored: set[tuple[str, str]]) -> list[int]:
    """Indexes of the events not yet stored."""
    return [i for i, e in enumerate(events) if (e.tenant_id, e.event_id) not in stored]


def still_suspect(events: Sequence, suspects: set[int], stored: set[tuple[str, str]]) -> set[int]:
    """The suspect partitions this batch does not clear: those with no event in it, or with
    an event already stored (the stored prefix may go on into the next batch)."""
    seen: dict[int, bool] = {}
    for e in events:
        p = partition_of(e)
        if p in suspects:
            seen[p] = seen.get(p, False) or (e.tenant_id, e.event_id) in stored
    return {p for p in suspects if seen.get(p, True)}


def id_chunks(events: Sequence, budget: int = LOOKUP_ID_BYTES) -> Iterator[Sequence]:
    """``events`` in runs whose tenant and event ids (quoted, escaped: up to twice their
    UTF-8 bytes, plus separators) fit ``budget`` bytes of query text."""
    start, size = 0, 0
    for i, e in enumerate(events):
        n = 2 * (len(e.tenant_id.encode()) + len(e.event_id.encode())) + 8
        if size + n > budget and i > start:
            yield events[start:i]
            start, size = i, 0
        size += n
    if start < len(events):
        yield events[start:]


class RedeliveryGuard:
    """Wraps the sink's ``write`` (on the sink's thread): same arguments, same token."""

    def __init__(self, sink):
        self.sink = sink
        self.clean: set[int] = set()     # internal-topic partitions past their stored prefix
        self.left_out = 0                # events found stored and not inserted again

    def revoked(self, partitions: set[int]) -> None:
        """Partitions that left this worker are suspect again when they come back."""
        self.clean -= partitions

    def write(self, events: Sequence, scored: Sequence, alerts: Sequence, dedup: str) -> None:
        suspects = {partition_of(e) for e in events} - self.clean
        stored: set[tuple[str, str]] = set()
        if suspects:
            stored = self._retried(self._stored_events,
                                   [e for e in events if partition_of(e) in suspects])
            self.clean |= suspects - still_suspect(events, suspects, stored)
        if stored:
            keep = keep_unstored(events, stored)
            self.left_out += len(events) - len(keep)
            events, scored = [events[i] for i in keep], [scored[i] for i in keep]
        if alerts:
            have = self._retried(self._stored_alerts, [a.alert_id for a in alerts])
            alerts = [a for a, v in zip(alerts, stored_versions(alerts)) if v not in have]
        self.sink.write(events, scored, alerts, dedup)

    def _retried(self, fn, arg):
        """A look-up under the sink's retry loop: ClickHouse down holds the batch, as an
        insert would, instead of failing the agent."""
        out = []
        self.sink._retrying(lambda: out.append(fn(arg)))
        return out[-1]

    def _stored_events(self, events: Sequence) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for part in id_chunks(events):
            rows = self.sink.client.query(
                "SELECT tenant_id, event_id FROM coverwatch.events "
                "WHERE tenant_id IN %(t)s AND event_id IN %(e)s",
                parameters={"t": tuple({e.tenant_id for e in part}),
                            "e": tuple({e.event_id for e in part})}).result_rows
            out |= {(t, e) for t, e in rows}
        return out

    def _stored_alerts(self, ids: list[str]) -> set[tuple[str, int]]:
        rows = self.sink.client.query(
            "SELECT alert_id, version FROM coverwatch.alerts WHERE alert_id IN %(a)s",
            parameters={"a": tuple(set(ids))}).result_rows
        return {(a, int(v)) for a, v in rows}
