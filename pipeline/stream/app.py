"""The Faust app: wiring only. Topics, one state table, the ingest task, two agents, two pages.

Dataflow: ``api-logs`` -> ingest (:mod:`pipeline.stream.repartition`: a batch consumer that
validates; bad -> ``api-logs-dlq``; good -> the internal ``coverwatch-events`` topic by tenant,
which is the repartition) -> ``detect`` (each batch through
:class:`pipeline.stream.batch.BatchCore`, then its writes through
:func:`pipeline.stream.batch.deliver`: alerts -> ``alerts``; rows -> ClickHouse; tenant
state -> the ``tenant-state`` table, whose changelog restores it after a restart).

With ``COVERWATCH_INPUT_KEYED=1`` (``api-logs`` is keyed by tenant, as ``coverwatch produce``
and the adapters' documented producers do) there is no ingest stage and no ``detect`` agent:
a plain consumer (:class:`pipeline.stream.keyed.KeyedSource`) reads the ``api-logs``
partitions of this worker's active table partitions and runs the same ``detect_group``,
validating in the batch (:func:`pipeline.stream.batch.keyed_logs`).

Delivery is at-least-once (the rules, and their tests, are in :mod:`pipeline.stream.batch`):
a batch's offsets are acknowledged only after its ClickHouse insert succeeded (the sink
retries, which is the backpressure), and every write is idempotent.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import faust
import orjson
from faust.types import TP

from pipeline import build, web_tls
from pipeline.contracts.alerts import Alert
from pipeline.detect import DETECTOR_VERSION
from pipeline.kafka_io import committed_offsets
from pipeline.kafka_options import bootstrap, faust_credentials
from pipeline.process import PromptVectors
from pipeline.settings import Settings
from pipeline.sinks.clickhouse import token
from pipeline.stream.batch import (BatchCore, Continuity, Detected, Record, deliver_until_done,
                                   groups, keyed_logs, offset_ranges)
from pipeline.stream.changelog import ebb
from pipeline.stream.checkpoint import CheckpointTopic
from pipeline.stream.keyed import KeyedSource, check_partitions
from pipeline.stream.metrics import CONTENT_TYPE, Metrics, consumer_lag
from pipeline.stream.query_endpoint import QueryEndpoint
from pipeline.stream.redact import Redactor
from pipeline.stream.redelivery import RedeliveryGuard
from pipeline.stream.repartition import Repartitioner
from pipeline.stream.tablestore import ALIAS, ROCKSDB_OPTIONS

log = logging.getLogger("coverwatch.worker")


INTERNAL_MAX_BYTES = 8 * 1024 * 1024
PRODUCED_HEADER = "cw-produced-ms"   # internal messages: oldest source record's produce time
PRODUCER_BATCH_BYTES = 1024 * 1024


def produced_ms(headers) -> float | None:
    """The source produce time (s) an internal message carries in its header."""
    for k, v in (headers.items() if isinstance(headers, dict) else headers or ()):
        if k == PRODUCED_HEADER:
            return int(v) / 1000
    return None


def records(batch) -> list[Record]:
    """Faust events (internal messages, summaries) -> what :class:`BatchCore` reads."""
    return [Record(m.partition, m.offset, ev.value, m.key, produced_ms(m.headers))
            for ev in batch for m in (ev.message,)]


def faust_lag(app, topic: str) -> int:
    """Messages behind on this worker's partitions of a topic the Faust consumer reads."""
    try:
        consumer = app.consumer
        read = consumer._read_offset
        return consumer_lag([tp for tp in consumer.assignment() if tp.topic == topic],
                            consumer.highwater,
                            lambda tp: 0 if read.get(tp) is None else read[tp] + 1
                            ).get(topic, 0)
    except Exception:  # noqa: BLE001 - metrics must never break the page
        return 0


class FaustOutputs:
    """:class:`pipeline.stream.batch.Outputs` over the app's topics, table and sink."""

    def __init__(self, *, dlq, alerts, summaries, table, sink, db_thread, metrics):
        self.dlq, self.alerts, self.summaries, self.table = dlq, alerts, summaries, table
        self.sink, self.db_thread, self.metrics = sink, db_thread, metrics
        self.keyed: KeyedSource | None = None

    async def dead_letter(self, key: bytes | None, value: bytes) -> None:
        self.metrics.dlq += 1
        await self.dlq.send(key=key, value=value)

    async def store(self, d: Detected) -> None:
        """The batch's rows and alerts; the sink retries until they land (backpressure)."""
        await asyncio.get_running_loop().run_in_executor(
            self.db_thread, self.sink.write, d.kept, d.scored, d.alerts, d.dedup)
        self.metrics.stored(d.produced)

    async def alert(self, a: Alert) -> None:
        self.metrics.alerts[a.severity] += 1
        await self.alerts.send(key=a.tenant_id.encode(), value=orjson.dumps(a.to_dict()))

    async def state(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.table.pop(key, None)   # a tombstone: compaction drops it
        else:
            self.table[key] = value

    async def summary(self, summary: dict) -> None:
        await self.summaries.send(key=summary["account"].encode(), value=orjson.dumps(summary))

    async def commit(self, offsets: dict[int, int]) -> None:
        """Keyed input: :meth:`KeyedSource.commit`. Otherwise nothing to do: Faust
        acknowledges a batch's messages when the agent asks for the next batch
        (``take_events``), after this, and commits acknowledged offsets."""
        if self.keyed is not None:
            await self.keyed.commit(offsets)


def create_app(settings: Settings) -> faust.App:
    s = settings
    app = faust.App(
        s.app_id,
        broker=[f"kafka://{h}" for h in bootstrap(s)],
        broker_credentials=faust_credentials(s),
        # the tenant-state table on disk, in memory of a fixed size (pipeline/stream/tablestore)
        store=f"{ALIAS}://" if s.table_store == "rocksdb" else "memory://",
        datadir=s.data_dir,
        topic_partitions=s.partitions,
        web_port=s.web_port,
        # Faust binds ``web_bind`` (default 0.0.0.0); ``web_host`` is only the advertised name
        web_bind=s.web_host,
        web_host=s.web_host,
        web_ssl_context=web_tls.server_context(s),
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
        # Internal messages carry many events each (up to 8 MB): read a few ahead, not 512
        # (which held gigabytes on a backlog). Keyed input has no Faust stream on api-logs.
        stream_buffer_maxsize=s.stream_buffer,
        broker_max_poll_records=500,
        consumer_max_fetch_size=INTERNAL_MAX_BYTES,
        # A SIGKILLed worker's partitions move on after 10 s instead of Faust's 60 s default.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )
    keyed = s.input_keyed
    dlq = app.topic(s.topic_dlq, value_type=bytes, key_type=bytes)
    alerts_topic = app.topic(s.topic_alerts, value_type=bytes, key_type=bytes)
    # What the detect agent reads: the internal topic the ingest stage repartitions into, or,
    # when the input is already keyed by tenant, the input topic itself (no second hop).
    # Either is co-partitioned with the tenant-state table.
    source = app.topic(s.topic_logs, value_type=bytes, key_type=bytes,
                       partitions=s.partitions) if keyed else app.topic(
        s.topic_events, value_type=bytes, key_type=bytes, partitions=s.partitions,
        internal=True, config={"max.message.bytes": str(INTERNAL_MAX_BYTES)})
    # One partition: the campaign stage must see every account's summary (few per account).
    summaries = app.topic(s.topic_summaries, value_type=bytes, key_type=bytes, partitions=1,
                          internal=True)
    state = app.Table("tenant-state", default=None, partitions=s.partitions,
                      use_partitioner=True, key_type=bytes, value_type=bytes,
                      options=dict(ROCKSDB_OPTIONS) if s.table_store == "rocksdb" else None)

    metrics = Metrics()
    # the campaign stage runs in its own agent below, so the processor has none; the
    # sketcher's own LRU bound sits above the live-tenant ceiling, so it only drops
    # accounts the checkpoints already evicted (it has no forget of its own)
    processor, stage = build.processor(s, stage_here=False,
                                       max_accounts=s.max_tenants * 11 // 10)
    # Privacy by default: unless prompts are to be stored as text, ingest embeds them and
    # the internal topic carries vectors, text signals and pseudonyms, not raw fields.
    redactor = None if s.store_prompts == "text" else Redactor(
        PromptVectors(processor.embedder, s.vector_cache), s.prompt_salt, s.store_prompts)
    checkpoints = build.checkpoints(s, processor, stage, remote=CheckpointTopic(s))
    # The table is only read on the detector thread, and Faust pauses the streams while it
    # recovers the table after a rebalance.
    core = BatchCore(processor, checkpoints, state.get, source.get_topic_name(),
                     decode=keyed_logs(build.adapter(s), s.embedding_dim, s.partitions,
                                       s.topic_logs) if keyed else None,
                     redact=redactor if keyed else None)
    sink = build.sink(s)
    guard = RedeliveryGuard(sink)   # re-delivered events already stored are not stored again
    # One thread owns ClickHouse (the embedded engine is not shared across threads);
    # another runs the detector so the event loop keeps serving Kafka heartbeats.
    db_thread = ThreadPoolExecutor(1, thread_name_prefix="clickhouse")
    cpu_thread = ThreadPoolExecutor(1, thread_name_prefix="detector")
    ingest_thread = ThreadPoolExecutor(1, thread_name_prefix="ingest")

    repartitioner = None if keyed else Repartitioner(
        s, send=lambda p, value, produced: source.send(
            value=value, partition=p, headers=[(PRODUCED_HEADER, produced)]),
        dead=lambda key, value: dlq.send(key=key, value=value),
        metrics=metrics, executor=ingest_thread, redact=redactor)

    if repartitioner is not None:
        @app.task
        async def ingest():
            await repartitioner.run()

    out = FaustOutputs(dlq=dlq, alerts=alerts_topic, summaries=summaries, table=state,
                       sink=guard, db_thread=db_thread, metrics=metrics)

    async def detect_group(recs: list[Record]) -> None:
        """One bounded group of records through the batch core, then its writes (the
        default agent and the keyed source both run their batches through this)."""
        t0 = time.perf_counter()
        detected = await asyncio.get_running_loop().run_in_executor(cpu_thread, core.run, recs)
        await deliver_until_done(detected, out)
        # the batch's table writes wait in the producer's buffer: bound it
        metrics.changelog_pending = await ebb(app.producer.buffer, s.changelog_pending)
        checkpoints.cover(source.get_topic_name(), offset_ranges(recs))
        if keyed:
            metrics.events_in += len(recs)
        if detected.skipped:
            log.info("%d re-delivered events skipped, already learned by their tenants' state "
                     "(%s)", detected.skipped, offset_ranges(recs))
        metrics.replayed_skipped += detected.skipped
        metrics.events_detected += len(detected.kept)
        metrics.duplicates = processor.duplicates
        metrics.tenants = checkpoints.tenants
        metrics.tenants_expired, metrics.tenants_evicted = (checkpoints.expired,
                                                            checkpoints.evicted)
        metrics.detected(time.perf_counter() - t0)

    async def save_globals() -> None:
        await asyncio.get_running_loop().run_in_executor(cpu_thread,
                                                         checkpoints.maybe_save_globals)

    async def table_metadata() -> None:
        # Table writes pick their changelog partition from the producer's metadata, which
        # knows only the topics it was asked about (ingest may send before the table exists).
        await app.producer._ensure_producer().client._wait_on_metadata(
            state.changelog_topic.get_topic_name())

    continuity = Continuity()   # records Faust's consumer skipped are read again
    detecting = [False]         # a batch is in the agent (a partition behind is not stalled)

    async def in_order(recs: list[Record]) -> list[Record]:
        """The batch's records that continue their partitions; a partition with records
        skipped before them is rewound (:class:`Continuity`)."""
        admitted, rewinds = continuity.admit(recs)
        for p, offset in rewinds.items():
            await rewind(p, offset, "never reached the detect agent")
        for p, first, last in continuity.given_up:
            log.error("internal topic partition %d: offsets %d..%d never came back after %d "
                      "rewinds (deleted by retention?); going on without them", p, first,
                      last, Continuity.MAX_REWINDS)
        continuity.given_up.clear()
        return admitted

    async def rewind(p: int, offset: int, why: str) -> None:
        """Read an internal partition again from ``offset`` (records Faust skipped)."""
        log.warning("internal topic partition %d: records from offset %d %s; reading them "
                    "again", p, offset, why)
        await app.consumer.seek(TP(source.get_topic_name(), p), offset)
        metrics.rewinds += 1

    def forget(partitions: set[int]) -> None:
        checkpoints.forget_partitions(partitions)
        guard.revoked(partitions)
        continuity.forget(partitions)

    keyed_source = KeyedSource(s, app, detect_group, forget,
                               after_poll=save_globals) if keyed else None
    out.keyed = keyed_source

    if keyed_source is not None:
        @app.task
        async def keyed_input():
            await table_metadata()
            await keyed_source.run()
    else:
        @app.agent(source)
        async def detect(stream):
            await table_metadata()
            async for batch in stream.take_events(s.stream_buffer, within=s.sink_within_s):
                detecting[0] = True
                admitted = await in_order(records(batch))
                # in groups of bounded size, so a backlog's batch of new tenants stays under
                # the ceiling (a crash between groups re-delivers a stored prefix: the guard)
                for recs in groups(admitted):
                    await detect_group(recs)
                await save_globals()
                detecting[0] = False

    @app.agent(summaries)
    async def campaigns(stream):
        """The global stage: one low-volume partition of account summaries, all accounts."""
        loop = asyncio.get_running_loop()
        async for batch in stream.take_events(1_000, within=1.0):
            found = [] if stage is None else await loop.run_in_executor(
                cpu_thread, stage.update_many, [orjson.loads(ev.value) for ev in batch])
            for a in found:
                a.stamped(DETECTOR_VERSION)
            ranges = offset_ranges(records(batch))
            if found:
                await out.store(Detected(alerts=found, dedup=token(s.topic_summaries, *ranges)))
            for a in found:
                await out.alert(a)
            checkpoints.cover(s.topic_summaries, ranges)
            # saved on the detector thread: nothing mutates the models while they are pickled
            await loop.run_in_executor(cpu_thread, checkpoints.maybe_save_globals)

    # The campaign stage moves with the one summaries partition (another process or
    # machine of the group may own it next): the owner saves it when the partition is
    # revoked, the next owner loads that save when it is assigned.
    stage_owned = [False]

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kwargs):
        if keyed_source is not None:
            # finish the group in flight; re-assigned (and tenants forgotten) after recovery
            await keyed_source.rebalancing()
        ours = source.get_topic_name()
        forget({tp.partition for tp in revoked if tp.topic == ours})
        if stage is not None and any(tp.topic == summaries.get_topic_name() for tp in revoked):
            stage_owned[0] = False
            await asyncio.get_running_loop().run_in_executor(
                cpu_thread, checkpoints.hand_over, "campaigns.bin")

    if not keyed:
        @app.on_rebalance_complete.connect
        async def on_recovered(app, **kwargs):
            """Where this assignment resumes each internal partition (what Continuity checks
            records against), read while the recovery waits for this signal, before it
            resumes and seeks the stream partitions: no record of the new assignment is
            detected before."""
            ours = source.get_topic_name()
            mine = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == ours)
            try:
                continuity.start(await asyncio.get_running_loop().run_in_executor(
                    None, committed_offsets, s, s.app_id, ours, mine))
            except Exception:  # noqa: BLE001 - then the first record read is the reference
                log.exception("could not read the committed offsets of %s", ours)

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kwargs):
        owns = any(tp.topic == summaries.get_topic_name() for tp in assigned)
        if stage is not None and owns and not stage_owned[0]:
            await asyncio.get_running_loop().run_in_executor(
                cpu_thread, checkpoints.take_over, "campaigns.bin")
        stage_owned[0] = owns

    @app.timer(interval=10.0)
    async def report():
        metrics.log(log)
        if not keyed:
            try:
                await rewind_stalled()
            except Exception:  # noqa: BLE001 - mid-rebalance: look again at the next tick
                log.debug("stalled-partition check skipped", exc_info=True)

    async def rewind_stalled() -> None:
        """Skipped records with none after them: a partition behind its high watermark
        with nothing coming while the agent waits (:meth:`Continuity.stalled`)."""
        topic = source.get_topic_name()
        hw = {} if detecting[0] else {
            p: app.consumer.highwater(TP(topic, p)) or 0 for p in continuity.next}
        for p, offset in continuity.stalled(hw).items():
            await rewind(p, offset, f"below the high watermark {hw[p]} never came")

    async def refresh():
        metrics.sink_behind_s = sink.behind_s
        metrics.queries_refused = queries.refused
        metrics.redelivered_stored = guard.left_out
        metrics.lag = {s.topic_logs: keyed_source.lag()} if keyed else {
            s.topic_events: faust_lag(app, s.topic_events),
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

    from pipeline.stream.malloc import cap_mmap_threshold
    if cap_mmap_threshold(settings.malloc_mmap_threshold):
        log.info("glibc mmap threshold fixed at %d bytes", settings.malloc_mmap_threshold)
    if settings.input_keyed:
        check_partitions(settings)   # refuses to start when the partition counts differ
    app = create_app(settings)
    # Batches allocate many short-lived objects while tenant state keeps many long-lived
    # ones: with the default thresholds the collector walked that state every few batches.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    Worker(app, loglevel=loglevel).execute_from_commandline()
