"""The Faust app: wiring only. Topics, one state table, the ingest task, two agents, two pages.

Dataflow: ``api-logs`` -> ingest (:mod:`pipeline.stream.repartition`: a batch consumer that
validates; bad -> ``api-logs-dlq``; good -> the internal ``coverwatch-events`` topic by tenant,
which is the repartition) -> ``detect`` (batches through :class:`pipeline.process.Processor`;
alerts -> ``alerts``; rows -> ClickHouse; tenant state -> the ``tenant-state`` table, whose
changelog restores it after a restart).

Delivery is at-least-once: a batch's offsets are acknowledged only after its ClickHouse
insert succeeded (the sink retries, which is the backpressure), and every write is
idempotent: events and alerts by dedup token and ReplacingMergeTree, detector state by the
source offset stored with it (an event at or below it is not learned twice).
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import faust
import orjson

from pipeline.process import (Processor, PromptVectors, make_campaigns, make_detector,
                              make_embedder)
from pipeline.settings import Settings
from pipeline.sinks.clickhouse import ClickHouseSink, token
from pipeline.stream.checkpoint import CheckpointTopic
from pipeline.stream.codec import decode_batch
from pipeline.stream.metrics import CONTENT_TYPE, Metrics
from pipeline.stream.query_endpoint import QueryEndpoint
from pipeline.stream.redact import Redactor
from pipeline.stream.redelivery import RedeliveryGuard
from pipeline.stream.repartition import Repartitioner, dlq_record
from pipeline.stream.state import Checkpoints

log = logging.getLogger("coverwatch.worker")


INTERNAL_MAX_BYTES = 8 * 1024 * 1024
PRODUCED_HEADER = "cw-produced-ms"   # internal messages: oldest source record's produce time
PRODUCER_BATCH_BYTES = 1024 * 1024


def offset_ranges(batch) -> list:
    """(partition, first, last offset) per partition of a batch: what a dedup token names."""
    ranges: dict[int, list[int]] = {}
    for ev in batch:
        r = ranges.setdefault(ev.message.partition, [ev.message.offset, ev.message.offset])
        r[0], r[1] = min(r[0], ev.message.offset), max(r[1], ev.message.offset)
    return sorted((p, a, b) for p, (a, b) in ranges.items())


def produced_at(batch) -> list[float]:
    """Source produce times (s) of a batch's internal messages, from their header."""
    out = []
    for ev in batch:
        headers = ev.message.headers or ()
        for k, v in (headers.items() if isinstance(headers, dict) else headers):
            if k == PRODUCED_HEADER:
                out.append(int(v) / 1000)
    return out


def consumer_lag(app, topics: set[str]) -> dict[str, int]:
    """Messages behind the high watermark, per input topic, on this worker's partitions."""
    lag: dict[str, int] = {}
    try:
        consumer = app.consumer
        for tp in consumer.assignment():
            if tp.topic in topics:
                read = consumer._read_offset.get(tp)
                behind = max(0, consumer.highwater(tp) - (read + 1 if read is not None else 0))
                lag[tp.topic] = lag.get(tp.topic, 0) + behind
    except Exception:  # noqa: BLE001 - metrics must never break the page
        pass
    return lag


def broker_credentials(s: Settings):
    if s.kafka_security_protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if "SSL" in s.kafka_security_protocol:
        import ssl
        ssl_context = ssl.create_default_context(cafile=s.kafka_ssl_cafile or None)
    if "SASL" in s.kafka_security_protocol:
        return faust.SASLCredentials(username=s.kafka_sasl_username,
                                     password=s.kafka_sasl_password,
                                     mechanism=s.kafka_sasl_mechanism or "PLAIN",
                                     ssl_context=ssl_context)
    return ssl_context


def create_app(settings: Settings) -> faust.App:
    s = settings
    app = faust.App(
        s.app_id,
        broker=[f"kafka://{h}" for h in s.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(s),
        store="memory://",
        datadir=s.data_dir,
        topic_partitions=s.partitions,
        web_port=s.web_port,
        # Faust binds ``web_bind`` (default 0.0.0.0); ``web_host`` is only the advertised name
        web_bind=s.web_host,
        web_host=s.web_host,
        value_serializer="raw",
        key_serializer="raw",
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        producer_max_request_size=INTERNAL_MAX_BYTES,
        # One produce request carries many table writes and internal messages: with
        # aiokafka's 16 KB default only two tenant states fit a batch, and each further
        # write waits for the previous batch's round trip.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        producer_linger=0.005,
        # The streams carry internal messages of up to CHUNK_BYTES (many events each).
        stream_buffer_maxsize=512,
        broker_max_poll_records=500,
        consumer_max_fetch_size=INTERNAL_MAX_BYTES,
        # A SIGKILLed worker's partitions move on after 10 s instead of Faust's 60 s default.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )
    dlq = app.topic(s.topic_dlq, value_type=bytes, key_type=bytes)
    alerts_topic = app.topic(s.topic_alerts, value_type=bytes, key_type=bytes)
    events = app.topic(s.topic_events, value_type=bytes, key_type=bytes,
                       partitions=s.partitions, internal=True,
                       config={"max.message.bytes": str(INTERNAL_MAX_BYTES)})
    # One partition: the campaign stage must see every account's summary (few per account).
    summaries = app.topic(s.topic_summaries, value_type=bytes, key_type=bytes, partitions=1,
                          internal=True)
    state = app.Table("tenant-state", default=None, partitions=s.partitions,
                      use_partitioner=True, key_type=bytes, value_type=bytes)

    metrics = Metrics()
    # the sketcher's own LRU bound sits above the live-tenant ceiling, so it only drops
    # accounts the checkpoints already evicted (it has no forget of its own)
    sketcher, stage = make_campaigns(s.campaigns, max_accounts=s.max_tenants * 11 // 10)
    detector = make_detector(s.detector, s.prior)
    # the campaign stage runs in its own agent below, so the processor has none
    embedder = make_embedder(s.embedder, s.embedding_dim)
    processor = Processor(detector, embedder, sketcher=sketcher, vector_cache=s.vector_cache)
    # Privacy by default: unless prompts are to be stored as text, ingest embeds them and
    # the internal topic carries vectors, text signals and pseudonyms, not raw fields.
    redactor = None if s.store_prompts == "text" else Redactor(
        PromptVectors(embedder, s.vector_cache), s.prompt_salt, s.store_prompts)
    global_parts = {}
    if hasattr(detector, "dump_population"):
        global_parts["population.bin"] = (detector, "dump_population", "load_population")
    if stage is not None:
        global_parts["campaigns.bin"] = (stage, "dump", "load")
    checkpoints = Checkpoints([p for p in (detector, sketcher) if p is not None], s.data_dir,
                              global_parts, idle_ms=s.tenant_idle_hours * 3_600_000,
                              max_tenants=s.max_tenants, remote=CheckpointTopic(s))
    sink = ClickHouseSink(s.clickhouse_dsn, store_prompts=s.store_prompts,
                          prompt_salt=s.prompt_salt, fault_file=s.fault_file)
    guard = RedeliveryGuard(sink)   # re-delivered events already stored are not stored again
    # One thread owns ClickHouse (the embedded engine is not shared across threads);
    # another runs the detector so the event loop keeps serving Kafka heartbeats.
    db_thread = ThreadPoolExecutor(1, thread_name_prefix="clickhouse")
    cpu_thread = ThreadPoolExecutor(1, thread_name_prefix="detector")
    ingest_thread = ThreadPoolExecutor(1, thread_name_prefix="ingest")

    repartitioner = Repartitioner(
        s, send=lambda p, value, produced: events.send(
            value=value, partition=p, headers=[(PRODUCED_HEADER, produced)]),
        dead=lambda key, value: dlq.send(key=key, value=value),
        metrics=metrics, executor=ingest_thread, redact=redactor)

    @app.task
    async def ingest():
        await repartitioner.run()

    def load_states(batch, expired=frozenset()):
        """Decode a batch, restore unknown tenants from the table, drop already-learned events.

        Runs on the detector thread: the in-memory table is only read here, and Faust pauses
        the streams while it recovers the table after a rebalance."""
        todo = []
        for ev in batch:
            msg = ev.message
            for i, e in enumerate(decode_batch(ev.value)):
                if not checkpoints.known(e.tenant_id):
                    checkpoints.restore(e.tenant_id, None if e.tenant_id in expired
                                        else state.get(e.tenant_id.encode()), e.ts_ms)
                pos = (msg.partition, (msg.offset << 16) | i)
                if checkpoints.already_learned(e.tenant_id, pos):
                    metrics.replayed_skipped += 1
                    continue
                e.extra["pos"] = pos
                todo.append(e)
        return todo

    def detect_batch(batch):
        """Evict idle tenants, decode, detect, and encode the touched tenants' state (all on
        the detector thread; the table already holds every earlier batch's states)."""
        expired = set(checkpoints.evict())
        kept, scored, alerts, failed = processor.process_safely(load_states(batch, expired))
        states = []
        for tenant, pos in checkpoints.touched(kept):
            value = checkpoints.encode(tenant, pos[1])
            if value is not None:
                states.append((tenant.encode(), value))
        return kept, scored, alerts, failed, states, expired

    @app.agent(events)
    async def detect(stream):
        loop = asyncio.get_running_loop()
        # Table writes pick their changelog partition from the producer's metadata, which
        # knows only the topics it was asked about (ingest may send before the table exists).
        await app.producer._ensure_producer().client._wait_on_metadata(
            state.changelog_topic.get_topic_name())
        async for batch in stream.take_events(64, within=s.sink_within_s):
            t0 = time.perf_counter()
            kept, scored, alerts, failed, states, expired = await loop.run_in_executor(
                cpu_thread, detect_batch, batch)
            for e, err in failed:
                metrics.dlq += 1
                await dlq.send(key=e.tenant_id.encode(), value=dlq_record(
                    orjson.dumps(e.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY),
                    "internal_error", err, s.topic_events, e.extra["pos"][0],
                    e.extra["pos"][1] >> 16))
            for a in alerts:
                a.stamped()
            dedup = token(s.topic_events, *offset_ranges(batch))
            await loop.run_in_executor(db_thread, guard.write, kept, scored, alerts, dedup)
            metrics.stored(produced_at(batch))
            checkpoints.cover(s.topic_events, offset_ranges(batch))
            for a in alerts:
                metrics.alerts[a.severity] += 1
                await alerts_topic.send(key=a.tenant_id.encode(), value=orjson.dumps(a.to_dict()))
            for key, value in states:
                state[key] = value
            for tenant in expired - {key.decode() for key, _ in states}:
                state.pop(tenant.encode(), None)   # a tombstone: compaction drops it
            metrics.events_detected += len(kept)
            metrics.duplicates = processor.duplicates
            metrics.tenants = checkpoints.tenants
            metrics.tenants_expired, metrics.tenants_evicted = (checkpoints.expired,
                                                                checkpoints.evicted)
            metrics.detected(time.perf_counter() - t0)
            for summary in processor.drain_summaries():
                await summaries.send(key=summary["account"].encode(), value=orjson.dumps(summary))
            await loop.run_in_executor(cpu_thread, checkpoints.maybe_save_globals)

    @app.agent(summaries)
    async def campaigns(stream):
        """The global stage: one low-volume partition of account summaries, all accounts."""
        loop = asyncio.get_running_loop()
        async for batch in stream.take_events(1_000, within=1.0):
            found = [] if stage is None else await loop.run_in_executor(
                cpu_thread, stage.update_many, [orjson.loads(ev.value) for ev in batch])
            for a in found:
                a.stamped()
            if found:
                dedup = token(s.topic_summaries, *offset_ranges(batch))
                await loop.run_in_executor(db_thread, guard.write, [], [], found, dedup)
            for a in found:
                metrics.alerts[a.severity] += 1
                await alerts_topic.send(key=a.tenant_id.encode(), value=orjson.dumps(a.to_dict()))
            checkpoints.cover(s.topic_summaries, offset_ranges(batch))
            # saved on the detector thread: nothing mutates the models while they are pickled
            await loop.run_in_executor(cpu_thread, checkpoints.maybe_save_globals)

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kwargs):
        ours = events.get_topic_name()
        checkpoints.forget_partitions({tp.partition for tp in revoked if tp.topic == ours})
        guard.revoked({tp.partition for tp in revoked if tp.topic == ours})

    @app.timer(interval=10.0)
    async def report():
        metrics.log(log)

    async def refresh():
        metrics.sink_behind_s = sink.behind_s
        metrics.queries_refused = queries.refused
        metrics.redelivered_stored = guard.left_out
        metrics.lag = {**consumer_lag(app, {s.topic_events}),
                       s.topic_logs: await repartitioner.lag()}

    @app.page("/metrics")
    async def metrics_page(web, request):
        await refresh()
        return web.bytes(metrics.exposition(), content_type=CONTENT_TYPE)

    @app.page("/health")
    async def health_page(web, request):
        """200 while batches are stored; 503 with the reason when the pipeline stalled."""
        await refresh()
        ok, reason = metrics.health(s.stall_s)
        return web.json({"healthy": ok, "reason": reason,
                         "seconds_since_stored": round(metrics.since_stored, 1),
                         "seconds_since_detect_batch": round(metrics.since_detect_batch, 1),
                         "lag": metrics.lag}, status=200 if ok else 503)

    queries = QueryEndpoint(s, sink)

    @app.page("/query")
    class QueryView(faust.web.View):
        async def get(self, request):
            return await queries.handle(self, request)

        async def post(self, request):
            return await queries.handle(self, request)

    def warm_sink():
        from clickhouse_connect.driver import options
        sink.client.ping()
        options.pd  # the first insert would import pandas (seconds) inside the first batch
        log.info("clickhouse ready at %s", s.clickhouse_dsn.split("@")[-1])
    # Opening the engine and migrating take seconds: overlap them with Faust's start-up.
    db_thread.submit(warm_sink)

    return app


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    import gc

    from faust.worker import Worker
    app = create_app(settings)
    # Batches allocate many short-lived objects while tenant state keeps many long-lived
    # ones: with the default thresholds the collector walked that state every few batches.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    Worker(app, loglevel=loglevel).execute_from_commandline()
