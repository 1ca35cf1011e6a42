"""Size of the global-model checkpoint records: ``python -m pipeline.bench.checkpoint_size``.

Runs the fault suite's simulated day (calib split, seed 7, 30 tenants, a hydra campaign)
through the worker's detector, embedder and campaign stage, then prints each model's pickle
size and the encoded record (zlib level 3) the checkpoint topic carries, to compare with
Kafka's default 1 MB message limit.
"""
from __future__ import annotations

import time

import orjson

from pipeline.contracts.events import parse_event
from pipeline.process import Processor, make_campaigns, make_detector, make_embedder
from pipeline.simulate.traffic import generate
from pipeline.stream import checkpoint


def main() -> dict:
    raw, _ = generate(split="calib", seed=7, tenants=30, days=1, hydra_accounts=(20, 25))
    events = [parse_event(orjson.dumps(e)) for e in raw]
    det = make_detector("coverwatch", "text")
    sketcher, stage = make_campaigns(True, max_accounts=10_000)
    proc = Processor(det, make_embedder("hashing", 384), sketcher=sketcher)
    for i in range(0, len(events), 500):
        proc.process_safely(events[i:i + 500])
        stage.update_many(proc.drain_summaries())
    out = {"events": len(events)}
    for name, dump in (("population", det.dump_population), ("campaigns", stage.dump)):
        payload = dump()
        t = time.perf_counter()
        record = checkpoint.encode(checkpoint.Snapshot(0, 0, payload))
        out[name] = {"pickle_bytes": len(payload), "record_bytes": len(record),
                     "encode_ms": round((time.perf_counter() - t) * 1000, 1)}
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return out


if __name__ == "__main__":
    main()
