"""Memory of tenant state on the worker's detect path, and whether the ceiling holds:
``python -m pipeline.bench.tenant_memory [--tenants N] [--out FILE]``.

Each tenant sends ``--events`` prompt-only events, in batches of ``--batch`` through the
worker's own batch core (:class:`pipeline.stream.batch.BatchCore`: evict, restore from the
table, embed and detect, checkpoint), with the worker's processor (text embedder, detector,
campaign sketcher bounded as the app bounds it), the worker's ``COVERWATCH_MAX_TENANTS``
ceiling, and the worker's table store: :class:`pipeline.stream.tablestore.TenantStore` (RocksDB)
in a temporary directory, or (``--store memory``) a dict, which is what Faust's ``memory://``
holds. Heap is tracemalloc's count of Python allocations; RSS is the process's resident
memory minus tracemalloc's own bookkeeping (RocksDB's native memory shows only there).
Both are sampled ``--samples`` times as tenants arrive: past the ceiling, a bounded worker's
memory stops growing.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import orjson

from pipeline import build
from pipeline.contracts.events import Event
from pipeline.settings import Settings
from pipeline.stream.batch import BatchCore
from pipeline.stream.codec import partition_for
from pipeline.testing.batches import messages

T0 = 1767225600000
MB = 1 << 20
PARTITIONS = 4


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rocksdb_table(path: Path, partitions: int):
    """The worker's tenant-state store (its class and options), in ``path``, not started:
    writes and reads go straight to the partition databases, as the worker's do."""
    import faust

    from pipeline.stream.tablestore import ALIAS, ROCKSDB_OPTIONS
    app = faust.App("tenant-memory-bench", datadir=str(path), store=f"{ALIAS}://",
                    key_serializer="raw", value_serializer="raw")
    table = app.Table("tenant-state", partitions=partitions, use_partitioner=True,
                      key_type=bytes, value_type=bytes, options=dict(ROCKSDB_OPTIONS))
    store = table.data
    for p in range(partitions):
        store._db_for_partition(p)   # the worker opens its assigned partitions at start
    return store


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def tenant_events(first: int, n: int, events: int, name: str = "tenant") -> list[Event]:
    """Tenants ``first``.. ``first + n``, 0.1 s of event time apart (a million span a day,
    well inside the idle expiry: tenants leave by the ceiling, not by age)."""
    out = []
    for i in range(first, first + n):
        for j in range(events):
            k = i * events + j
            out.append(Event(f"e{i}-{j}", T0 + 100 * k, f"{name}-{i}",
                             prompt=f"question {k % 500} about topic {k % 7}",
                             client_ip=f"10.{i % 250}.{j % 250}.1", user_agent="sdk/1"))
    return out


def measure(tenants: int, events: int = 1, max_tenants: int | None = None,
            store: str = "rocksdb", batch: int = 2000, samples: int = 10,
            heap: bool = True, workdir: str | None = None) -> dict:
    """``heap``: trace Python allocations (about 3x slower); without it only RSS is read."""
    s = Settings(embedder="hashing", embedding_dim=384)
    ceiling = s.max_tenants if max_tenants is None else max_tenants
    processor, _ = build.processor(s, stage_here=False, max_accounts=ceiling * 11 // 10)
    tmp = Path(tempfile.mkdtemp(prefix="tenant-memory-", dir=workdir))
    try:
        table = rocksdb_table(tmp / "table", PARTITIONS) if store == "rocksdb" else {}
        cp = build.checkpoints(Settings(data_dir=str(tmp / "worker"), max_tenants=ceiling),
                               processor)
        core = BatchCore(processor, cp, table.get, "coverwatch-events")
        offsets = [0] * PARTITIONS

        def run_batch(evs: list[Event]) -> None:
            by_part: dict[int, list[Event]] = {}
            for e in evs:
                by_part.setdefault(partition_for(e.tenant_id, PARTITIONS), []).append(e)
            records = []
            for p, part in sorted(by_part.items()):
                records += messages(part, per_message=500, partition=p, start=offsets[p])
                offsets[p] += -(-len(part) // 500)
            d = core.run(records)
            for key, value in d.states:   # what FaustOutputs.state does
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value

        run_batch(tenant_events(0, 200, 1, "warm"))   # warm-up tenants: imports, caches, numpy
        gc.collect()
        gc.freeze()   # as the worker does (pipeline.stream.app.run_worker)
        gc.set_threshold(100_000, 50, 100)
        if heap:
            tracemalloc.start()
        heap0, rss0 = tracemalloc.get_traced_memory()[0], rss_bytes()
        per_batch = max(1, batch // events)
        every = max(per_batch, tenants // samples)
        series, started, done = [], time.perf_counter(), 0
        while done < tenants:
            n = min(per_batch, tenants - done)
            run_batch(tenant_events(done, n, events))
            done += n
            if done % every < n or done == tenants:
                gc.collect()
                series.append({
                    "tenants_seen": done, "tenants_live": cp.tenants,
                    "heap_mb": round((tracemalloc.get_traced_memory()[0] - heap0) / MB, 1)
                    if heap else None,
                    "rss_mb": round((rss_bytes() - tracemalloc.get_tracemalloc_memory()
                                     - rss0) / MB, 1),
                    "table_disk_mb": round(dir_bytes(tmp / "table") / MB, 1)
                    if store == "rocksdb" else 0.0,
                    "seconds": round(time.perf_counter() - started, 1)})
                print(series[-1], flush=True)
        heap_peak = tracemalloc.get_traced_memory()[1] - heap0 if heap else None
        tracemalloc.stop()
        probe = range(0, tenants, max(1, tenants // 500))
        checkpoint = sum(len(table.get(f"tenant-{i}".encode()) or b"") for i in probe)
        last = series[-1]
        # past the ceiling: what each further tenant adds (0 when the ceiling holds)
        past = [x for x in series if x["tenants_seen"] > ceiling * 1.1]
        slope = {}
        if len(past) >= 2:
            dt = past[-1]["tenants_seen"] - past[0]["tenants_seen"]
            slope = {k: round((past[-1][k] - past[0][k]) * MB / dt)
                     for k in ("heap_mb", "rss_mb") if past[0][k] is not None}
        return {
            "tenants": tenants, "events_per_tenant": events, "max_tenants": ceiling,
            "table_store": store, "batch_events": per_batch * events,
            "heap_bytes_per_tenant": round(last["heap_mb"] * MB / tenants) if heap else None,
            "rss_bytes_per_tenant": round(last["rss_mb"] * MB / tenants),
            "heap_bytes_per_live_tenant": round(last["heap_mb"] * MB / cp.tenants)
            if heap else None,
            "heap_peak_mb": round(heap_peak / MB, 1) if heap else None,
            "bytes_per_tenant_past_the_ceiling": {
                "heap": slope.get("heap_mb"), "rss": slope.get("rss_mb")},
            "checkpoint_bytes_per_tenant": round(checkpoint / len(probe)),
            "tenants_live_at_end": cp.tenants, "tenants_evicted": cp.evicted,
            "seconds": last["seconds"], "series": series,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_avg_at_end": os.getloadavg()[0]},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=1)
    ap.add_argument("--max-tenants", type=int, default=None,
                    help="the ceiling (default: the worker's COVERWATCH_MAX_TENANTS default)")
    ap.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb")
    ap.add_argument("--batch", type=int, default=2000, help="events per detect batch")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--heap", action=argparse.BooleanOptionalAction, default=True,
                    help="trace the Python heap (tracemalloc, about 3x slower)")
    ap.add_argument("--out", help="write the result as JSON here")
    a = ap.parse_args(argv)
    r = measure(a.tenants, a.events, a.max_tenants, a.store, a.batch, a.samples, a.heap)
    print({k: v for k, v in r.items() if k != "series"})
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
