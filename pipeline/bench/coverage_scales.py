"""``coverwatch bench scales``: read the coverage rule's per-age scales off calib traffic.

The uncalibrated detector (what the worker runs) carries one coverage scale per age bucket
and embedding space (:data:`pipeline.detect.coverwatch.COVERAGE_BY_AGE`). This command is
how those of tenants old enough to be read over two windows (buckets from
:data:`~pipeline.detect.coverwatch.SUSTAINED_FROM` on) are read, so the numbers in the code
can be checked and read again when the rule changes: the *calib* prompt split (never the
report split the benchmarks publish), 7 days, one tenant per attack family (scales read
where sweeps are most of the old tenants come out fitted to sweeps), the detector with the
space's prior and the one coverage scale of :data:`~pipeline.detect.coverwatch.RULE_SCALES`
for all ages (it decides which windows teach), run online as the worker runs. Per age bucket, the 99th percentile of the ordinary benign tenants' largest unscaled
coverage score, times :data:`~pipeline.detect.coverwatch.CALIBRATION_MARGIN`, never above
the first window's; a bucket with fewer than :data:`MIN_TENANTS` such tenants inherits the
younger one's. The young buckets keep their earlier readings (sessions 10 and 19, one
window judged alone; their 99th percentile, about 1.45, halved the attackers caught at
their first windows for no benign tenant fewer).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import numpy as np

from pipeline.bench import save
from pipeline.bench.detect import (FULL, events_for, get_text_embedder, modes_of, prior_for,
                                   single_thread_blas, traffic_for, window_summaries)
from pipeline.detect.coverwatch import (CALIBRATION_MARGIN, COVERAGE_BY_AGE, GATED, RULES,
                                        SUSTAINED_FROM, CoverwatchDetector, default_scales)
from pipeline.detect.population import BUCKETS, age_bucket

MIN_TENANTS = 30
QUANTILE = 0.99


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modes", default="provided,text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/coverage_scales.json")


def read_scales(mode: str, seed: int, sizes: dict) -> dict:
    """Per age bucket: ordinary benign tenants, their score quantile and the scale."""
    cov = [name for name, _, _ in RULES].index("coverage")
    prior = prior_for(mode)
    det = CoverwatchDetector(prior=prior, rule_scales=default_scales(None))  # one scale, all ages
    traffic = traffic_for("calib", mode, seed, sizes, attackers=1)
    ordinary = {t for t, lab in traffic.labels.items()
                if not lab["is_attack"] and not lab.get("hard_negative")}
    best: dict = defaultdict(lambda: -np.inf)
    embedder = get_text_embedder() if mode == "text" else None
    for s in window_summaries(det, events_for(traffic, embedder)):
        if s["rules"] and s["tenant_id"] in ordinary:
            key = (s["tenant_id"], age_bucket(s["window"]))
            best[key] = max(best[key], s["rules"][cov])
    young = COVERAGE_BY_AGE[prior][:SUSTAINED_FROM]
    rows, out = [], []
    for b in range(BUCKETS):
        v = [x for (_, bb), x in best.items() if bb == b and x != GATED]
        q = float(np.quantile(v, QUANTILE, method="higher")) if v else None
        if b < SUSTAINED_FROM:
            scale = young[b]                  # not read here: see the module's docstring
        elif len(v) >= MIN_TENANTS:
            scale = min(round(q * CALIBRATION_MARGIN, 2), young[0])
        else:
            scale = out[-1]
        rows.append({"bucket": b, "tenants": len(v), "p99": q, "scale": scale})
        out.append(scale)
    return {"buckets": rows, "scales": out, "ordinary_tenants": len(ordinary)}


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    single_thread_blas()
    result = {"seed": args.seed, "sizes": FULL["calib"], "modes": {}}
    lines = ["# Coverage scales per age bucket (calib split, attackers rare)", "",
             "| mode | scales (buckets 1, 2-3, 4-7, ..., 128+) |", "|---|---|"]
    for mode in modes_of(args.modes):
        print(f"[scales {mode}] calib split ...", file=sys.stderr)
        got = read_scales(mode, args.seed, FULL["calib"])
        result["modes"][mode] = got
        lines.append(f"| {mode} | {tuple(got['scales'])} |")
    md = "\n".join(lines) + "\n"
    print(md)
    save(args.out, result, md)
    print(f"wrote {args.out} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    return 0
