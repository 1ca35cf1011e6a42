"""The one place the deployment's parts are built from :class:`Settings`: the input adapter,
the :class:`Processor`, the worker's checkpoints and the ClickHouse sink.

The worker, ``coverwatch replay``, the analyst commands and the benchmarks all build them
here, so a setting means the same thing in each (settings stay plain data).
"""
from __future__ import annotations

from pipeline.process import Processor, make_campaigns, make_detector, make_embedder
from pipeline.settings import Settings


def adapter(s: Settings):
    """The input adapter this deployment's configuration names."""
    import orjson

    from pipeline.adapters import get_adapter
    try:
        options = orjson.loads(s.adapter_options) if s.adapter_options else {}
    except orjson.JSONDecodeError:
        raise SystemExit("COVERWATCH_ADAPTER_OPTIONS must be a JSON object") from None
    return get_adapter(s.input_format, **options)


def processor(s: Settings, *, stage_here: bool = True, max_accounts: int = 1_000_000):
    """``(processor, stage)``: the detector, embedder and campaign sketcher the settings name.

    ``stage_here``: the campaign stage runs inside the processor (replay, benchmarks: one
    process sees every account); else the caller runs the returned stage on the summaries
    it drains (the worker's global agent)."""
    sketcher, stage = make_campaigns(s.campaigns, max_accounts=max_accounts)
    proc = Processor(make_detector(s.detector, s.prior, s.threshold),
                     make_embedder(s.embedder, s.embedding_dim),
                     sketcher=sketcher, stage=stage if stage_here else None,
                     vector_cache=s.vector_cache)
    return proc, stage


def sink(s: Settings):
    """The ClickHouse sink the settings name (opening it migrates the schema)."""
    from pipeline.sinks.clickhouse import ClickHouseSink
    return ClickHouseSink(s.clickhouse_dsn, store_prompts=s.store_prompts,
                          prompt_salt=s.prompt_salt, fault_file=s.fault_file)


def checkpoints(s: Settings, processor: Processor, stage=None, remote=None):
    """The worker's :class:`Checkpoints` over the processor's per-tenant parts (detector,
    sketcher) and the global models (the detector's population, the campaign stage);
    ``remote``: the compacted topic the global models are also saved to
    (:class:`~pipeline.stream.checkpoint.CheckpointTopic`)."""
    from pipeline.stream.state import Checkpoints
    detector, sketcher = processor.detector, processor.sketcher
    global_parts = {}
    if hasattr(detector, "dump_population"):
        global_parts["population.bin"] = (detector, "dump_population", "load_population")
    if stage is not None:
        global_parts["campaigns.bin"] = (stage, "dump", "load")
    return Checkpoints([p for p in (detector, sketcher) if p is not None], s.data_dir,
                       global_parts, idle_ms=s.tenant_idle_hours * 3_600_000,
                       max_tenants=s.max_tenants, remote=remote)
