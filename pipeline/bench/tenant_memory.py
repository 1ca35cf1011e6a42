"""Heap per tenant, measured with tracemalloc (not from the checkpoint size), and what
eviction gives back: ``python -m pipeline.bench.tenant_memory [--tenants N]``.

Each tenant sends ``--events`` prompt-only events through the worker's path (the text
embedder at ingest, the detector and the campaign sketcher in a
:class:`pipeline.process.Processor`, positions in :class:`pipeline.stream.state.Checkpoints`);
then the ceiling is lowered to a tenth and :meth:`Checkpoints.evict` runs.
"""
from __future__ import annotations

import argparse
import gc
import tracemalloc

from pipeline import build
from pipeline.contracts.events import Event
from pipeline.settings import Settings
from pipeline.stream.state import Checkpoints


def measure(tenants: int, events: int = 1) -> dict:
    processor, _ = build.processor(Settings(embedder="hashing", embedding_dim=384),
                                   stage_here=False)
    detector, sketcher = processor.detector, processor.sketcher
    cp = Checkpoints([detector, sketcher], "/nonexistent", max_tenants=10**9)
    warm = [Event(f"w{i}", 1767225600000 + i, "warm", prompt=f"warm up {i}") for i in range(200)]
    for e in warm:
        e.extra["pos"] = (0, 0)
    processor.process(warm)
    cp.touched(warm)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    batch, n = [], 0
    for i in range(tenants):
        for j in range(events):
            e = Event(f"e{i}-{j}", 1767225600000 + 1000 * n, f"tenant-{i}",
                      prompt=f"question {n % 500} about topic {n % 7}",
                      client_ip=f"10.{i % 250}.{j}.1", user_agent="sdk/1")
            e.extra["pos"] = (0, n)
            batch.append(e)
            n += 1
        if len(batch) >= 2000:
            processor.process(batch)
            cp.touched(batch)
            batch = []
    if batch:
        processor.process(batch)
        cp.touched(batch)
    processor._recent.clear()   # the de-duplication window is per event, not per tenant
    gc.collect()
    live = tracemalloc.get_traced_memory()[0] - before
    dump = sum(len(detector.dump_tenant(f"tenant-{i}") or b"")
               + len(sketcher.dump_tenant(f"tenant-{i}") or b"") for i in range(0, tenants, 97))
    cp.max_tenants = tenants // 10
    cp.evict()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"tenants": tenants, "events_per_tenant": events,
            "heap_bytes_per_tenant": round(live / tenants),
            "checkpoint_bytes_per_tenant": round(dump / len(range(0, tenants, 97))),
            "live_after_evicting_to_a_tenth": cp.tenants,
            "heap_bytes_per_tenant_after": round(after / tenants)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=1)
    a = ap.parse_args(argv)
    print(measure(a.tenants, a.events))


if __name__ == "__main__":
    main()
