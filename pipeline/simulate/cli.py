"""``coverwatch simulate``: write labelled traffic as JSONL (optionally gzipped) + labels JSON."""
from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import orjson

from pipeline.simulate.traffic import DEFAULT_DAYS, DEFAULT_TENANTS, MODES, generate

QUICK = {"tenants": 60, "days": 2, "hydra_accounts": (20, 40)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="events, FILE.jsonl or FILE.jsonl.gz")
    parser.add_argument("--labels", required=True, help="per-tenant labels, FILE.json")
    parser.add_argument("--mode", choices=MODES, default="provided",
                        help="provided: events carry MiniLM embeddings; text: prompt only")
    parser.add_argument("--split", choices=("calib", "report"), default="report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tenants", type=int, default=None,
                        help=f"non-hydra tenants (default {DEFAULT_TENANTS})")
    parser.add_argument("--days", type=float, default=None, help=f"default {DEFAULT_DAYS}")
    parser.add_argument("--quick", action="store_true", help="small run for smoke tests")


def run(args: argparse.Namespace) -> int:
    kw = dict(QUICK) if args.quick else {}
    if args.tenants is not None:
        kw["tenants"] = args.tenants
    if args.days is not None:
        kw["days"] = args.days
    traffic = generate(split=args.split, seed=args.seed, mode=args.mode, **kw)
    if traffic.stand_in:
        what = {"sample": "the package's 3.4k-prompt sample",
                "synthetic": "SYNTHETIC stand-in text"}.get(traffic.pool.origin, "stand-in")
        print(f"warning: prompt corpus not found; traffic from {what}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Level 1: events with 384-float embeddings are large, and level 9 is ~15x slower.
    opener = (lambda p, m: gzip.open(p, m, compresslevel=1)) if out.name.endswith(".gz") else open
    with opener(out, "wb") as fh:
        for ev in traffic.iter_events():
            fh.write(orjson.dumps(ev) + b"\n")
    labels = Path(args.labels)
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_bytes(orjson.dumps(
        {"split": traffic.split, "seed": traffic.seed, "mode": traffic.mode,
         "stand_in": traffic.stand_in, "prompts": traffic.pool.origin, "start_ms": traffic.start_ms, "end_ms": traffic.end_ms,
         "events": len(traffic), "tenants": traffic.labels}, option=orjson.OPT_INDENT_2))
    print(f"wrote {len(traffic):,} events of {len(traffic.labels):,} tenants to {out}",
          file=sys.stderr)
    return 0
