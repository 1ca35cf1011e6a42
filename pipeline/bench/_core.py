"""The detector core alone, for ``bench throughput``: run pinned to one core (``taskset -c 0``).

``python -m pipeline.bench._core '{"n": 20000, ...}'`` prints one JSON object on stdout:

Rates are events per CPU-second of this process (``time.process_time``; pinned to one CPU,
that is one core's throughput even when other processes share the machine), with the
wall-clock rate beside them (``*_wall``).

- ``modes``: per mode (``provided``, ``text``) the events/s of :meth:`Processor.process` over
  pre-parsed realistic events (the replay path: de-duplicate, embed prompts, detect), batches
  of 5,000 as the worker takes them; parsing is not timed.
- ``tenants_scaling``: events/s with 1k / 10k / 100k tracked tenants. The K tenants are
  restored (not timed) from the states of the realistic provided run (tenant j gets the state
  of realistic tenant j mod T, with that run's population model), so every K starts with the
  same mix of warm states; then the same realistic event stream, its events spread uniformly
  over the K tenants, is timed. Memory per tenant is measured for each K:
  every tenant's state is dumped and loaded into a fresh detector under ``tracemalloc``
  (the live Python heap of exactly those states), and the mean ``dump_tenant`` size.
"""
from __future__ import annotations

import gc
import os
import sys
import time
import tracemalloc

import numpy as np
import orjson

BATCH = 5_000


def log(msg: str) -> None:
    print(f"[core] {msg}", file=sys.stderr, flush=True)


def timed_process(proc, events, batch: int = BATCH) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to process ``events`` in batches."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(events), batch):
        proc.process(events[i:i + batch])
    return time.perf_counter() - t0, time.process_time() - c0


def clone(e, tenant: str, event_id: str, ts_ms: int | None = None):
    from pipeline.contracts.events import Event
    return Event(event_id=event_id, ts_ms=e.ts_ms if ts_ms is None else ts_ms, tenant_id=tenant,
                 api_key_id=e.api_key_id, model=e.model, endpoint=e.endpoint, prompt=e.prompt,
                 embedding=e.embedding, input_tokens=e.input_tokens,
                 output_tokens=e.output_tokens, latency_ms=e.latency_ms, status=e.status,
                 client_ip=e.client_ip, user_agent=e.user_agent)


def memory(det, make) -> dict:
    """Heap bytes of the detector's tenant states (reloaded under tracemalloc) and dump sizes."""
    tenants = list(det._tenants) if hasattr(det, "_tenants") else []
    if not tenants:
        return {}
    fresh = make()
    dump_total = 0
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for t in tenants:
        blob = det.dump_tenant(t)
        dump_total += len(blob)
        fresh.load_tenant(t, blob)
        del blob
    heap = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del fresh
    return {"tenants": len(tenants), "heap_bytes_per_tenant": round(heap / len(tenants)),
            "dump_bytes_per_tenant": round(dump_total / len(tenants))}


def main(cfg: dict) -> dict:
    from pipeline import build
    from pipeline.bench._worker_proc import detector_name, embedder_source
    from pipeline.process import Processor, make_detector
    from pipeline.settings import Settings
    from pipeline.simulate.traffic import generate

    name = detector_name()
    out: dict = {"detector": name, "embedder": embedder_source(),
                 "affinity": sorted(os.sched_getaffinity(0)), "batch": BATCH, "modes": {}}
    n, seed = cfg["n"], cfg.get("seed", 0)
    base_provided = main_det = None
    for mode in cfg.get("modes", ["provided", "text"]):
        t0 = time.perf_counter()
        tr = generate("report", seed=seed, mode=mode, tenants=cfg["traffic_tenants"],
                      days=cfg["traffic_days"])
        events = list(tr.iter_parsed(0, n))
        log(f"{mode}: {len(events):,} parsed events of {len(tr):,} "
            f"({time.perf_counter() - t0:.1f} s to build)")
        proc, _ = build.processor(Settings(detector=name, campaigns=False, embedding_dim=384,
                                           embedder="hashing" if mode == "text" else "none"))
        if mode == "provided":
            base_provided, main_det = events, proc.detector
        else:
            events = [clone(e, e.tenant_id, e.event_id) for e in events]  # fresh: embed fills them
        secs, cpu = timed_process(proc, events)
        rate = len(events) / cpu
        mem = memory(proc.detector, lambda: make_detector(name))
        out["modes"][mode] = {"events": len(events), "seconds": round(secs, 2),
                              "cpu_seconds": round(cpu, 2),
                              "core_events_per_s": round(rate),
                              "core_events_per_s_wall": round(len(events) / secs),
                              "loadavg_1m": round(os.getloadavg()[0], 1),
                              "tenants": mem.get("tenants"),
                              "heap_bytes_per_tenant": mem.get("heap_bytes_per_tenant"),
                              "dump_bytes_per_tenant": mem.get("dump_bytes_per_tenant"),
                              "stand_in": tr.stand_in}
        log(f"{mode}: {rate:,.0f} events per CPU-second ({len(events) / secs:,.0f}/s wall)")
        del proc, tr, events
        gc.collect()

    scaling = []
    if base_provided is not None and cfg.get("scaling"):
        # Templates: every tenant state of the realistic provided run (varied ages, windows
        # at every phase), plus that run's population model, so each K starts warm and alike.
        templates = [main_det.dump_tenant(t) for t in list(main_det._tenants)]
        population = main_det.dump_population() if hasattr(main_det, "dump_population") else None
        m = min(cfg["scaling_events"], len(base_provided))
        base = base_provided[:m]
        rng = np.random.default_rng(7)
        for k in cfg["scaling"]:
            ids = [f"tenant-{j:06d}" for j in range(k)]
            pick = rng.integers(0, k, m)
            timed = [clone(e, ids[j], f"s{k}-{i}") for i, (e, j) in enumerate(zip(base, pick))]
            det = make_detector(name)
            if population is not None:
                det.load_population(population)
            t0 = time.perf_counter()
            for j, t in enumerate(ids):
                det.load_tenant(t, templates[j % len(templates)])
            restore_s = time.perf_counter() - t0
            proc = Processor(det)
            secs, cpu = timed_process(proc, timed)
            mem = memory(det, lambda: make_detector(name))
            row = {"tenants": k, "events": m, "core_events_per_s": round(m / cpu),
                   "core_events_per_s_wall": round(m / secs),
                   "restore_tenants_per_s": round(k / restore_s),
                   "timed_events_per_tenant": round(m / k, 2), **{
                       f: mem.get(f) for f in ("heap_bytes_per_tenant",
                                               "dump_bytes_per_tenant")}}
            scaling.append(row)
            log(f"{k:,} tenants: {row['core_events_per_s']:,} events/s, "
                f"{row['heap_bytes_per_tenant']} B/tenant heap, "
                f"{row['dump_bytes_per_tenant']} B/tenant dumped")
            del proc, det, timed
            gc.collect()
    out["tenants_scaling"] = scaling
    return out


if __name__ == "__main__":
    result = main(orjson.loads(sys.argv[1]))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
