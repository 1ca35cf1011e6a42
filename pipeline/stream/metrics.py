"""Worker metrics on ``/metrics`` (Prometheus, through ``prometheus_client``), the ``/health``
verdict, and a log line every 10 s.

Counters stay plain attributes (the stages add to them once per batch) and are read at
scrape time by a collector; histograms (batch time, produce-to-stored latency) and the
process metrics (RSS, CPU, open files) come from ``prometheus_client``. Each worker has a
registry of its own, so tests can run several in one process.

A worker can be up and still not working: a sink retrying, a detector wedged, a query
hogging the engine. ``seconds_since_stored`` and ``seconds_since_detect_batch`` show it,
and :meth:`Metrics.health` fails when either passes ``stall_s`` while there is lag.

>>> m = Metrics()
>>> m.events_in += 3
>>> b"coverwatch_events_in_total 3.0" in m.exposition()
True
>>> m.health(stall_s=60.0)
(True, 'ok')
"""
from __future__ import annotations

import time
from collections import Counter

from prometheus_client import (CollectorRegistry, Histogram, ProcessCollector,
                               disable_created_metrics, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

disable_created_metrics()  # no *_created samples: they only double the page
CONTENT_TYPE = "text/plain; version=0.0.4"   # aiohttp adds the charset itself
_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def consumer_lag(partitions, highwater, next_offset) -> dict[str, int]:
    """Messages behind the high watermark per topic, over a consumer's ``partitions``.

    ``highwater(tp)`` and ``next_offset(tp)`` (the next offset the worker will read) come
    from whichever client owns the partitions; a partition where either is unknown (None)
    counts 0, so a restarted worker does not report a whole topic it will never re-read.

    >>> from collections import namedtuple
    >>> TP = namedtuple("TP", "topic partition")
    >>> consumer_lag([TP("a", 0), TP("a", 1), TP("b", 0)], {TP("a", 0): 10, TP("a", 1): 4,
    ...              TP("b", 0): None}.get, lambda tp: 3)
    {'a': 8, 'b': 0}
    """
    lag: dict[str, int] = {}
    for tp in partitions:
        hw, nxt = highwater(tp), next_offset(tp)
        lag[tp.topic] = lag.get(tp.topic, 0) + (0 if hw is None or nxt is None
                                                else max(0, hw - nxt))
    return lag


class Metrics:
    """The worker's counters and gauges; the stages set them, the pages read them."""

    def __init__(self):
        self.events_in = 0
        self.dlq = 0
        self.events_detected = 0
        self.duplicates = 0
        self.replayed_skipped = 0
        self.redelivered_stored = 0
        self.rewinds = 0
        self.tenants = 0
        self.sink_behind_s = 0.0
        self.batch_seconds = 0.0
        self.alerts: Counter = Counter()
        self.lag: dict = {}
        self.queries_refused = 0
        self.tenants_expired = 0
        self.tenants_evicted = 0
        self.changelog_pending = 0
        now = time.monotonic()
        # a fresh worker has stored nothing yet: it counts from its start
        self.last_stored = self.last_detect_batch = now
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        self.batch_time = Histogram(
            "coverwatch_batch_duration_seconds",
            "Wall time of one detect batch: decode, detect, store, send alerts.",
            buckets=_BATCH_BUCKETS, registry=self.registry)
        self.stored_latency = Histogram(
            "coverwatch_stored_latency_seconds",
            "From the produce time of the oldest api-logs record in an internal message to "
            "its events being stored in ClickHouse.",
            buckets=_LATENCY_BUCKETS, registry=self.registry)

    def stored(self, produced_at: list[float]) -> None:
        """A batch is stored: ``produced_at`` are its messages' source produce times (s)."""
        now = time.time()
        self.last_stored = time.monotonic()
        for t in produced_at:
            if t > 0:
                self.stored_latency.observe(max(0.0, now - t))

    def detected(self, seconds: float) -> None:
        self.last_detect_batch = time.monotonic()
        self.batch_seconds = seconds
        self.batch_time.observe(seconds)

    @property
    def since_stored(self) -> float:
        return time.monotonic() - self.last_stored

    @property
    def since_detect_batch(self) -> float:
        return time.monotonic() - self.last_detect_batch

    def health(self, stall_s: float) -> tuple[bool, str]:
        """(healthy, reason): stalled is nothing stored or detected for ``stall_s`` while
        input waits, or a sink that has failed to store for that long."""
        lag = sum(self.lag.values())
        if self.sink_behind_s > stall_s:
            return False, f"clickhouse sink failing for {self.sink_behind_s:.0f} s"
        if lag > 0 and self.since_detect_batch > stall_s:
            return False, (f"no detect batch for {self.since_detect_batch:.0f} s "
                           f"with {lag} messages waiting")
        if lag > 0 and self.since_stored > stall_s:
            return False, (f"nothing stored for {self.since_stored:.0f} s "
                           f"with {lag} messages waiting")
        return True, "ok"

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def log(self, logger) -> None:
        logger.info("in=%d dlq=%d detected=%d tenants=%d alerts=%d sink_behind=%.1fs "
                    "since_stored=%.0fs dup=%d skipped=%d left_out=%d", self.events_in,
                    self.dlq, self.events_detected, self.tenants, sum(self.alerts.values()),
                    self.sink_behind_s, self.since_stored, self.duplicates,
                    self.replayed_skipped, self.redelivered_stored)


class _Collector:
    """Reads :class:`Metrics`' plain attributes at scrape time."""

    def __init__(self, m: Metrics):
        self.m = m

    def collect(self):
        m = self.m
        for name, value, doc in (
                ("events_in", m.events_in, "api-logs messages read by the ingest stage."),
                ("dlq", m.dlq, "Messages and events sent to the dead-letter topic."),
                ("events_detected", m.events_detected, "Events run through the detector."),
                ("duplicates", m.duplicates, "Re-sent events dropped by event_id."),
                ("redelivered_skipped", m.replayed_skipped,
                 "Re-delivered events the tenant state had already learned."),
                ("redelivered_stored", m.redelivered_stored,
                 "Re-delivered events found already stored, left out of the insert."),
                ("partition_rewinds", m.rewinds,
                 "Internal-topic partitions read again from records the consumer skipped."),
                ("queries_refused", m.queries_refused,
                 "/query calls refused (unauthorised, not loopback, too many at once)."),
                ("tenants_expired", m.tenants_expired,
                 "Tenants idle past COVERWATCH_TENANT_IDLE_HOURS, forgotten and deleted."),
                ("tenants_evicted", m.tenants_evicted,
                 "Tenants beyond COVERWATCH_MAX_TENANTS moved out of memory to the table.")):
            yield CounterMetricFamily(f"coverwatch_{name}", doc, value=value)
        alerts = CounterMetricFamily("coverwatch_alerts", "Alerts raised.", labels=["severity"])
        for sev in ("warning", "critical"):
            alerts.add_metric([sev], m.alerts[sev])
        yield alerts
        for name, value, doc in (
                ("tenants_tracked", m.tenants, "Tenants with detector state in this worker."),
                ("changelog_pending", m.changelog_pending,
                 "Tenant-state writes queued for the changelog after the last batch "
                 "(a batch waits while more than COVERWATCH_CHANGELOG_PENDING are)."),
                ("sink_behind_seconds", m.sink_behind_s,
                 "How long the ClickHouse sink has been failing to store a batch (0: fine)."),
                ("batch_seconds", m.batch_seconds, "Wall time of the last detect batch."),
                ("seconds_since_stored", m.since_stored,
                 "Seconds since a batch was last stored in ClickHouse (or since start)."),
                ("seconds_since_detect_batch", m.since_detect_batch,
                 "Seconds since the detector last finished a batch (or since start).")):
            yield GaugeMetricFamily(f"coverwatch_{name}", doc, value=value)
        lag = GaugeMetricFamily("coverwatch_consumer_lag",
                                "Messages behind the high watermark on this worker's partitions.",
                                labels=["topic"])
        for topic, n in sorted(m.lag.items()):
            lag.add_metric([topic], n)
        yield lag
