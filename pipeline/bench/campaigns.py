"""``coverwatch bench campaigns``: memory and speed of the campaign stage as accounts grow.

The coordinated-campaign issue asks for bounded state with many accounts. For 1k, 10k and
100k accounts (``--accounts`` for the largest), each sending ``--queries`` events over a few
hours (random cells, distinct prompts, one client each; a tenth of them broad sweepers so
the stage keeps candidate groups), it measures

- resident memory per account of the per-account sketcher
  (:class:`~pipeline.campaigns.AccountSketcher`, next to the per-tenant detector) and the
  global stage (:class:`~pipeline.campaigns.CampaignStage`) together (RSS growth: the stage
  keeps fixed-size histograms and its candidate groups, not accounts);
- the checkpoint size of one account's sketch and of the whole stage;
- CPU time per event in the sketcher and per account summary in the stage.

Writes ``--out`` (JSON) and prints a table.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np
import orjson

from pipeline.campaigns import AccountSketcher, CampaignStage
from pipeline.contracts.events import Event
from pipeline.detect.base import Scored

T0 = 1_767_225_600_000
BATCH = 4096


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", type=int, default=100_000, help="largest account count")
    parser.add_argument("--queries", type=int, default=50, help="events per account")
    parser.add_argument("--out", default="bench/results/campaigns.json")
    parser.add_argument("--seed", type=int, default=0)


def _traffic(rng: np.random.Generator, n_acc: int, queries: int):
    """Event batches in time order: accounts start over 48 h, one query every ~30 s."""
    start = rng.integers(0, 48 * 3_600_000, n_acc)
    gap = rng.integers(10_000, 60_000, n_acc)
    broad = rng.random(n_acc) < 0.1
    topics = rng.integers(1, 4097, (n_acc, 8))
    acct = np.repeat(np.arange(n_acc), queries)
    k = np.tile(np.arange(queries), n_acc)
    ts = T0 + start[acct] + gap[acct] * k
    order = np.argsort(ts, kind="stable")
    cells = np.where(broad[acct], rng.integers(1, 4097, len(acct)),
                     topics[acct, rng.integers(0, 8, len(acct))])
    for i in range(0, len(order), BATCH):
        idx = order[i:i + BATCH]
        events = [Event(f"e{j}", int(ts[j]), f"acct-{acct[j]}", prompt=f"q {acct[j]} {k[j]}",
                        model="m", endpoint="/v1/chat", output_tokens=300,
                        user_agent=f"ua-{acct[j] % 7}", client_ip=f"10.{acct[j] % 250}.0.1")
                  for j in idx.tolist()]
        yield events, [Scored(cell=int(c)) for c in cells[idx].tolist()]


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(n_acc: int, queries: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    gc.collect()
    base = _rss()
    sk = AccountSketcher(seed=seed)
    stage = CampaignStage(seed=seed)
    stage_s = sketch_s = 0.0
    summaries = 0
    for events, scored in _traffic(rng, n_acc, queries):
        t0 = time.process_time()
        sk.observe_batch(events, scored)
        out = sk.drain()
        t1 = time.process_time()
        stage.update_many(out)
        stage_s += time.process_time() - t1
        sketch_s += t1 - t0
        summaries += len(out)
    del events, scored
    gc.collect()
    heap = _rss() - base
    one = len(sk.dump_tenant(f"acct-{n_acc - 1}") or b"")
    return {"accounts": n_acc, "queries_per_account": queries, "summaries": summaries,
            "rss_bytes_per_account": round(heap / n_acc),
            "sketch_checkpoint_bytes_per_account": one,
            "stage_checkpoint_bytes": len(stage.dump()), "stage_groups": stage.groups,
            "sketch_us_per_event": round(1e6 * sketch_s / (n_acc * queries), 1),
            "stage_us_per_summary": round(1e6 * stage_s / max(summaries, 1), 1)}


def run(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    sizes = sorted({n for n in (1_000, 10_000, args.accounts) if n <= args.accounts})
    rows = []
    for n in sizes:
        print(f"[campaigns] {n:,} accounts x {args.queries} queries ...", file=sys.stderr,
              flush=True)
        rows.append(measure(n, args.queries, args.seed))
    lines = ["| accounts | RSS B/account | sketch checkpoint B/account | stage checkpoint | "
             "groups kept | sketch µs/event | stage µs/summary |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['accounts']:,} | {r['rss_bytes_per_account']:,} | "
                     f"{r['sketch_checkpoint_bytes_per_account']:,} | "
                     f"{r['stage_checkpoint_bytes'] / 1024:,.0f} KiB | {r['stage_groups']:,} | "
                     f"{r['sketch_us_per_event']} | {r['stage_us_per_summary']} |")
    result = {"rows": rows, "seconds": round(time.monotonic() - t_start, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print("\n".join(lines))
    print(f"wrote {out} in {result['seconds']:.0f} s", file=sys.stderr)
    return 0
