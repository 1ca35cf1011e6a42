"""``coverwatch``: the command line. Builds one Settings object and hands it to a driver."""
from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module

from pipeline.settings import Settings

# Subcommands implemented elsewhere: name -> (module, help). Each module provides
# ``add_arguments(parser)`` and ``run(args) -> int``; imported only when used.
PLUGINS = {
    "simulate": ("pipeline.simulate.cli", "generate realistic labelled traffic (JSONL)"),
    "demo": ("pipeline.demo", "stream live demo traffic into Kafka and print alerts"),
    "top": ("pipeline.analyst", "riskiest tenants now, with why"),
    "tenant": ("pipeline.analyst", "one tenant's history"),
}
BENCHES = {
    "detect": ("pipeline.bench.detect", "detection quality: ours vs baselines"),
    "embed": ("pipeline.bench.embedding", "text embedder speed and recall@10 vs MiniLM"),
    "throughput": ("pipeline.bench.throughput", "throughput, latency and memory vs the Kafka ceiling"),
    "campaigns": ("pipeline.bench.campaigns", "campaign stage memory and speed at 1k-100k accounts"),
    "replay": ("pipeline.bench.replay", "a million events through coverwatch replay on one core"),
    "lofo": ("pipeline.bench.lofo", "leave-one-family-out: each attack family vs a detector chosen without it"),
    "age": ("pipeline.bench.alert_age", "at which window tenants first alert; without the first window"),
    "scales": ("pipeline.bench.coverage_scales", "the coverage rule's per-age scales, read on calib traffic"),
}


def _worker(args, settings: Settings) -> int:
    import os
    from dataclasses import replace
    n = settings.processes if args.processes is None else args.processes
    if n < 0:
        raise SystemExit("--processes must be 0 (one per CPU) or more")
    n = n or os.cpu_count() or 1
    sys.argv = [sys.argv[0]]  # faust parses sys.argv itself
    if n > 1:   # N processes of one app: pipeline/stream/supervisor.py
        from pipeline.stream.supervisor import supervise
        return supervise(replace(settings, processes=n), loglevel=args.loglevel)
    from pipeline.stream.app import run_worker
    run_worker(settings, loglevel=args.loglevel)
    return 0


def _replay(args, settings: Settings) -> int:
    from pipeline.replay import replay, write_alerts
    r = replay(args.files, settings, clickhouse=not args.no_clickhouse, batch=args.batch,
               progress=sys.stderr.isatty())
    if args.alerts_out:
        write_alerts(r.alerts, args.alerts_out)
    rejected = sum(r.rejected.values())
    print(f"replayed {r.events:,} events ({r.duplicates:,} duplicates dropped, {rejected:,} "
          f"rejected{': ' + dict(r.rejected).__repr__() if rejected else ''}) in "
          f"{r.seconds:.1f} s; {len(r.alerts)} alerts", file=sys.stderr)
    return 0


def _produce(args, settings: Settings) -> int:
    from pipeline.kafka_io import produce_files
    n = produce_files(args.files, settings, topic=args.topic or settings.topic_logs)
    print(f"produced {n:,} messages to {args.topic or settings.topic_logs}", file=sys.stderr)
    return 0


def _query(args, settings: Settings) -> int:
    from pipeline.analyst import print_table, run_query
    columns, rows = run_query(settings, args.sql)
    print_table(columns, rows, fmt=args.format)
    return 0


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; a plugin's module (and its arguments) is loaded only when ``argv`` names
    it, so ``coverwatch replay`` does not import every benchmark (seconds of start-up)."""
    wanted = set(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="coverwatch", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="the streaming worker (Faust)")
    w.add_argument("--loglevel", default="info")
    w.add_argument("--processes", type=int, default=None, metavar="N",
                   help="worker processes in one consumer group (default: "
                        "$COVERWATCH_PROCESSES or 1; 0: one per CPU)")
    _input_format(w)
    w.set_defaults(func=_worker)

    r = sub.add_parser("replay", help="run the detector offline over JSONL(.gz) logs")
    r.add_argument("files", nargs="+")
    r.add_argument("--alerts-out", help="write alerts as JSONL here")
    r.add_argument("--no-clickhouse", action="store_true", help="do not write to ClickHouse")
    r.add_argument("--batch", type=int, default=5_000)
    _input_format(r)
    r.set_defaults(func=_replay)

    pr = sub.add_parser("produce", help="load JSONL(.gz) logs into Kafka")
    pr.add_argument("files", nargs="+")
    pr.add_argument("--topic", default=None, help="default: $TOPIC_API_LOGS or api-logs")
    _input_format(pr)
    pr.set_defaults(func=_produce)

    q = sub.add_parser("query", help="read-only SQL against ClickHouse")
    q.add_argument("sql")
    q.add_argument("--format", choices=["table", "json", "tsv"], default="table")
    q.set_defaults(func=_query)

    for name, (module, help_) in PLUGINS.items():
        sp = sub.add_parser(name, help=help_)
        sp.set_defaults(plugin=module, plugin_name=name)
        if name in wanted:
            _add_plugin_args(module, sp, name)

    b = sub.add_parser("bench", help="benchmarks (print tables, write JSON)")
    bsub = b.add_subparsers(dest="bench", required=True)
    for name, (module, help_) in BENCHES.items():
        sp = bsub.add_parser(name, help=help_)
        sp.set_defaults(plugin=module, plugin_name=name)
        if "bench" in wanted and name in wanted:
            _add_plugin_args(module, sp, name)
    return p


def _input_format(p: argparse.ArgumentParser) -> None:
    from pipeline.adapters import ADAPTERS
    p.add_argument("--input-format", choices=sorted(ADAPTERS), default=None,
                   help="log format of the input (default: $COVERWATCH_INPUT_FORMAT or coverwatch)")


def _add_plugin_args(module: str, parser: argparse.ArgumentParser, name: str) -> None:
    try:
        mod = import_module(module)
    except ImportError as exc:
        parser.set_defaults(plugin_error=f"{name} is unavailable: {exc}")
        return
    adder = getattr(mod, f"add_{name}_arguments", None) or getattr(mod, "add_arguments")
    adder(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python is chatty at INFO
    if getattr(args, "plugin_error", None):
        print(args.plugin_error, file=sys.stderr)
        return 2
    if hasattr(args, "plugin"):
        mod = import_module(args.plugin)
        runner = getattr(mod, f"run_{args.plugin_name}", None) or getattr(mod, "run")
        return runner(args)
    overrides = {"input_format": args.input_format} if getattr(args, "input_format", None) else {}
    return args.func(args, Settings.from_env(**overrides))


if __name__ == "__main__":
    sys.exit(main())
