"""``coverwatch bench replay``: a million events through ``coverwatch replay`` on one core.

Generates a week of simulated traffic with ``coverwatch simulate`` (text-only by default,
so every prompt is embedded too; ``--mode provided`` for events carrying vectors), unless
``--file`` names one, then runs each of these in a fresh process pinned to one core with
single-threaded BLAS:

- ``bare``: read every line and decode it with orjson: the floor any replay pays;
- ``replay``: ``coverwatch replay FILE --no-clickhouse``: validate, embed, detect, campaign
  stage, alerts; the command a user runs.

Reports wall and CPU seconds, seconds per million events and replay / bare; the target is
one million events in under 60 s. Traffic goes to a temporary directory (``--keep`` to
keep it); the shared prompt corpus is used when present, stand-in prompts otherwise.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

TARGET_S_PER_MILLION = 60.0
# non-hydra tenants for a week of traffic: 650 give ~1.1M events, 120 ~200k
FULL_TENANTS, QUICK_TENANTS = 650, 120
_BARE = """
import sys, orjson
n = 0
for path in sys.argv[1:]:
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                orjson.loads(line)
                n += 1
print(n)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", help="replay this JSONL file instead of simulating traffic")
    parser.add_argument("--mode", choices=["text", "provided"], default="text")
    parser.add_argument("--quick", action="store_true", help="about 200k events, not 1.1M")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the generated traffic")
    parser.add_argument("--out", default="bench/results/replay.json")


def log(msg: str) -> None:
    print(f"[replay {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pinned(argv: list[str]) -> dict:
    """Run ``argv`` on one core (single-threaded BLAS): its wall and CPU seconds, peak RSS
    (its own, from wait4) and output."""
    cpu = max(os.sched_getaffinity(0))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err,
                                preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed:\n{stderr[-2000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "max_rss_mb": round(ru.ru_maxrss / 1024), "stdout": stdout, "stderr": stderr}


def simulate(path: Path, mode: str, tenants: int, seed: int) -> None:
    cmd = [sys.executable, "-m", "pipeline.cli", "simulate", "--mode", mode, "--tenants",
           str(tenants), "--days", "7", "--seed", str(seed), "--out", str(path),
           "--labels", str(path.with_suffix(".labels.json"))]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def run(args: argparse.Namespace) -> int:
    from pipeline.bench.throughput import machine

    with tempfile.TemporaryDirectory(prefix="coverwatch-replay-") as tmp:
        if args.file:
            path = Path(args.file)
        else:
            tenants = QUICK_TENANTS if args.quick else FULL_TENANTS
            path = Path(tmp) / f"{args.mode}.jsonl"
            log(f"simulating a week of {args.mode} traffic ({tenants} tenants + hydra) ...")
            simulate(path, args.mode, tenants, args.seed)
        log(f"{path}: {path.stat().st_size / 1e6:,.0f} MB; bare read (one core) ...")
        bare = pinned([sys.executable, "-c", _BARE, str(path)])
        events = int(bare.pop("stdout"))
        log(f"{events:,} lines in {bare['wall_s']} s; coverwatch replay (one core) ...")
        rep = pinned([sys.executable, "-m", "pipeline.cli", "replay", str(path),
                      "--no-clickhouse"])
        done = re.search(r"replayed ([\d,]+) events .* (\d+) alerts", rep["stderr"])
        if args.keep and not args.file:
            kept = Path(args.out).with_suffix(".jsonl")
            path.replace(kept)
            log(f"traffic kept in {kept}")
    for r in (bare, rep):
        r.pop("stderr", None)
        r.pop("stdout", None)
    per_m = rep["wall_s"] / events * 1e6
    result = {
        "machine": machine(), "mode": args.mode, "file": str(args.file or "simulated"),
        "events": events,
        "replayed": int(done.group(1).replace(",", "")) if done else None,
        "alerts": int(done.group(2)) if done else None,
        "bare": bare, "replay": rep,
        "replay_s_per_million": round(per_m, 1),
        "replay_events_per_s": round(events / rep["wall_s"]),
        "replay_vs_bare": round(rep["wall_s"] / bare["wall_s"], 1),
        "target_s_per_million": TARGET_S_PER_MILLION,
        "met": per_m < TARGET_S_PER_MILLION,
    }
    print(table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    log(f"wrote {out}")
    return 0


def table(r: dict) -> str:
    b, p = r["bare"], r["replay"]
    return "\n".join([
        f"Replay of {r['events']:,} {r['mode']} events, one core "
        f"({r['machine']['cpu_model'] or 'unknown CPU'})",
        "",
        "| run | wall s | CPU s | s per million | events/s | max RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
        f"| bare read + orjson | {b['wall_s']} | {b['cpu_s']} | "
        f"{b['wall_s'] / r['events'] * 1e6:.1f} | {r['events'] / b['wall_s']:,.0f} | "
        f"{b['max_rss_mb']} |",
        f"| coverwatch replay | {p['wall_s']} | {p['cpu_s']} | {r['replay_s_per_million']} | "
        f"{r['replay_events_per_s']:,} | {p['max_rss_mb']} |",
        "",
        f"replay / bare: {r['replay_vs_bare']}x; {r['alerts']} alerts; target < "
        f"{r['target_s_per_million']:.0f} s per million: {'met' if r['met'] else 'NOT met'}",
    ])
