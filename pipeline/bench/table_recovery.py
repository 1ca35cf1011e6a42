"""How long a worker spends recovering a large tenant-state changelog before it detects:
``python -m pipeline.bench.table_recovery [--tenants N] [--out FILE]``.

A real broker (:class:`pipeline.testing.kafka.KafkaBroker`) gets a ``tenant-state``
changelog of ``N`` tenants, one record each (what compaction leaves of a changelog: one
record per tenant not yet expired), whose values are real checkpoints (the detector's and the
sketcher's state of one-event tenants, cycled); then real workers start over it and the time
from launch to ready (consumers assigned, Faust's recovery done: "Worker ready") is taken,
with the worker's RSS once ready:

- ``empty``: a worker of another app id, no changelog (the start-up cost alone);
- ``fresh_dir``: the RocksDB store on an empty data directory reads the whole changelog;
- ``same_dir``: the same worker restarted on its data directory reads only what was written
  after the offset its databases hold (here nothing);
- ``memory``: ``COVERWATCH_TABLE_STORE=memory`` reads it all into the heap, every start.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import tempfile
import time
from pathlib import Path

import orjson

from pipeline.settings import Settings

MB = 1 << 20


def checkpoints(n: int) -> list[bytes]:
    """``n`` real tenant checkpoints of one-event tenants (the worker's table values)."""
    from pipeline import build
    from pipeline.bench.tenant_memory import tenant_events
    from pipeline.stream.batch import BatchCore
    from pipeline.testing.batches import messages
    s = Settings(embedder="hashing", embedding_dim=384)
    processor, _ = build.processor(s, stage_here=False)
    with tempfile.TemporaryDirectory() as tmp:
        core = BatchCore(processor, build.checkpoints(Settings(data_dir=tmp), processor),
                         {}.get, "coverwatch-events")
        d = core.run(messages(tenant_events(0, n, 1), per_message=500))
    return [v for _, v in d.states if v]


def fill_changelog(bootstrap: str, topic: str, tenants: int, values: list[bytes]) -> float:
    """Produce one record per tenant (Kafka's default partitioner, as the table's); seconds."""
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20,
                      max_request_size=8 * MB)
    t = time.perf_counter()
    for i in range(tenants):
        p.send(topic, key=f"tenant-{i}".encode(), value=values[i % len(values)])
    p.flush()
    p.close()
    return time.perf_counter() - t


def start(settings: Settings, work: Path, name: str, **env) -> dict:
    """Launch a worker, wait until it is ready, note the time and RSS, stop it (SIGTERM)."""
    from pipeline.testing.worker import WorkerProcess, status_kb
    w = WorkerProcess(settings, work, name=name, COVERWATCH_DETECTOR="burst",
                      COVERWATCH_EMBEDDER="none", **env)
    w.start(timeout=1800)
    out = {"seconds_to_ready": round(w.ready_at - w.launched_at, 1),
           "rss_mb": round(status_kb(w.pid) / 1024, 1)}
    w.stop(signal.SIGTERM)
    print(name, out, flush=True)
    return out


def measure(tenants: int, stores: tuple[str, ...] = ("rocksdb", "memory")) -> dict:
    from dataclasses import replace

    from pipeline.testing.kafka import KafkaBroker, free_port
    from pipeline.testing.worker import isolated_settings, topic_partitions
    work = Path(tempfile.mkdtemp(prefix="table-recovery-"))
    broker = KafkaBroker()
    broker.start()
    try:
        values = checkpoints(2000)
        s = isolated_settings(broker.bootstrap, work / "w")
        changelog = f"{s.app_id}-tenant-state-changelog"
        broker.create_topics({**topic_partitions(s), changelog: s.partitions})
        produce_s = fill_changelog(broker.bootstrap, changelog, tenants, values)
        log_mb = sum(f.stat().st_size for f in Path(broker.data_dir).rglob("*")
                     if changelog in str(f.parent) and f.suffix == ".log") / MB
        empty = isolated_settings(broker.bootstrap, work / "e")
        broker.create_topics(topic_partitions(empty))
        out = {"tenants": tenants, "changelog_mb": round(log_mb, 1),
               "checkpoint_bytes_mean": round(sum(map(len, values)) / len(values)),
               "produce_seconds": round(produce_s, 1),
               "empty": start(empty, work / "e", "empty")}
        if "rocksdb" in stores:
            out["fresh_dir"] = start(s, work / "w", "fresh_dir")
            out["table_disk_mb"] = round(sum(
                f.stat().st_size for f in Path(s.data_dir).rglob("*") if f.is_file()) / MB, 1)
            out["same_dir"] = start(replace(s, web_port=free_port()), work / "w", "same_dir")
        if "memory" in stores:
            mem = replace(s, data_dir=str(work / "m" / "worker"), web_port=free_port())
            out["memory"] = start(mem, work / "m", "memory", COVERWATCH_TABLE_STORE="memory")
        out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_avg_at_end": os.getloadavg()[0]}
        return out
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=200_000)
    ap.add_argument("--stores", default="rocksdb,memory")
    ap.add_argument("--out", help="write the result as JSON here")
    a = ap.parse_args(argv)
    r = measure(a.tenants, tuple(a.stores.split(",")))
    print(r)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
