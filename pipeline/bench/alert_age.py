"""``coverwatch bench age``: at which of its windows each tenant first alerts, and what is
left when the first window is not judged.

Every rule scores a window against tenants *of the same age*, so when a tenant is caught says
what the detector really relies on. This runs the shipped detector (default scales, prior,
population learned online, per-tenant rules only: no campaign stage) over 400 tenants and
7 days of each split (the sizes of ``bench lofo``), and beside it the same detector with one
coverage scale for all ages (before issue 14's per-age scales), records every window's
scaled rule scores, and reports:

- ordinary benign tenants flagged and attackers caught (after their attack starts), by the
  window of their first alert (1, 2-3, 4-15, 16+) and the rule that fired;
- the same with every tenant's first window left unjudged (per attack family too): a proxy for an attacker that
  spends its first window on ordinary queries before it sweeps, and for a worker started on
  a gateway whose tenants it meets mid-life (both are ways round a first-window judgement;
  the proxy keeps the sweep's own later windows, so it is an estimate, not the attack run);
- with ``--cusum K,H,HI`` (repeatable), the alerts a CUSUM over each tenant's window scores
  would raise instead of one window at 1: the running sum of (score - K), floored at 0,
  reaching H, or one window reaching HI. Broad chat products' first windows score like a
  sweep's; their later windows fall well below, a sweep's stay near 1 (issue 14).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict

import numpy as np

from pipeline.bench import save
from pipeline.bench.detect import events_for, get_text_embedder, single_thread_blas
from pipeline.bench.lofo import SIZES
from pipeline.simulate.traffic import generate

AGES = ((1, "1"), (3, "2-3"), (15, "4-15"), (1 << 62, "16+"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="150 tenants, 2 days")
    parser.add_argument("--modes", default="provided,text")
    parser.add_argument("--splits", default="calib,report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/alert_age.json")
    parser.add_argument("--cusum", action="append", default=[], metavar="K,H,HI",
                        help="also tally a CUSUM over window scores (repeatable)")


def window_scores(split: str, mode: str, seed: int, sizes: dict, one_scale: bool = False):
    """Per tenant, ``[(window, events_seen, scaled rule scores)]`` in order, and the labels.
    ``one_scale``: every rule at one scale for all ages (:data:`RULE_SCALES`, the detector
    before per-age coverage scales), for the side-by-side comparison."""
    from pipeline.detect.coverwatch import CoverwatchDetector, default_scales
    from pipeline.detect.population import age_bucket
    traffic = generate(split, seed=seed, mode=mode, **sizes)
    # the prior of the mode's embedding space, as bench detect and a configured worker use
    prior = "provided" if mode == "provided" else "text"
    scales = default_scales(None if one_scale else prior)   # None: RULE_SCALES at every age
    det = CoverwatchDetector(prior=prior, rule_scales=scales)
    seq: dict = defaultdict(list)
    embedder = get_text_embedder() if mode == "text" else None
    batch: list = []

    def fold() -> None:
        det.update_many(batch)
        for s in det.drain_summaries():
            seq[s["tenant_id"]].append((s["window"], s["events_seen"],
                                        np.asarray(s["rules"]) / scales[:, age_bucket(s["window"])]))
        batch.clear()
    for e in events_for(traffic, embedder):
        batch.append(e)
        if len(batch) == 1024:
            fold()
    fold()
    return seq, traffic.labels


def first_alert(windows: list, label: dict, skip_first: bool = False,
                cusum: tuple[float, float, float] | None = None):
    """(window, rule index) of the tenant's first window with a rule at or above 1 (for an
    attacker, after its attack started), or None. ``cusum``: (K, H, HI), alert when the
    running sum of (window score - K), floored at 0, reaches H or a window reaches HI."""
    start = label.get("attack_start_index") or 0
    total = 0.0
    for k, seen, s in windows:
        top = float(s.max())
        if cusum is not None:
            total = max(0.0, total + top - cusum[0])
        if (skip_first and k == 1) or (label["is_attack"] and seen <= start):
            continue
        if top >= 1.0 if cusum is None else (total >= cusum[1] or top >= cusum[2]):
            return k, int(s.argmax())
    return None


def tally(seq: dict, labels: dict, skip_first: bool = False, cusum=None) -> dict:
    from pipeline.detect.coverwatch import RULES
    out = {}
    for kind in ("ordinary", "attack"):
        ts = [t for t, lab in labels.items() if t in seq and (
            lab["is_attack"] if kind == "attack" else not (lab["is_attack"] or lab["hard_negative"]))]
        by: Counter = Counter()
        for t in ts:
            got = first_alert(seq[t], labels[t], skip_first, cusum)
            if got:
                age = next(name for hi, name in AGES if got[0] <= hi)
                by[f"{age}:{RULES[got[1]][0]}"] += 1
        out[kind] = {"tenants": len(ts), "flagged": sum(by.values()), "by_first_window": dict(by)}
    return out


def families(seq: dict, labels: dict, skip_first: bool = False) -> dict:
    """Attack family -> [caught, tenants]."""
    out: dict = {}
    for t, lab in labels.items():
        if t in seq and lab["is_attack"]:
            row = out.setdefault(lab["family"], [0, 0])
            row[0] += first_alert(seq[t], lab, skip_first) is not None
            row[1] += 1
    return dict(sorted(out.items()))


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    single_thread_blas()
    sizes = SIZES["quick" if args.quick else "full"]
    result = {"seed": args.seed, "sizes": sizes, "runs": {}}
    for mode in [m for m in args.modes.split(",") if m]:
        for split in [s for s in args.splits.split(",") if s]:
            print(f"[age] {split} split, {mode} ...", file=sys.stderr)
            for name, one in (("coverwatch", False), ("one scale", True)):
                seq, labels = window_scores(split, mode, args.seed, sizes, one_scale=one)
                result["runs"][f"{split}/{mode}/{name}"] = {
                    "all_windows": tally(seq, labels),
                    "first_window_unjudged": tally(seq, labels, True),
                    "families_first_window_unjudged": families(seq, labels, True),
                    "cusum": {c: tally(seq, labels, cusum=tuple(map(float, c.split(","))))
                              for c in ([] if one else args.cusum)}}
    result["seconds"] = round(time.monotonic() - t0, 1)
    md = markdown(result)
    save(args.out, result, md)
    print(md)
    return 0


def _share(d: dict) -> str:
    return f"{d['flagged']} of {d['tenants']} ({d['flagged'] / max(d['tenants'], 1):.1%})"


def markdown(result: dict) -> str:
    lines = ["# When tenants first alert (shipped detector, per-tenant rules)", "",
             f"{result['sizes']['tenants']} tenants, {result['sizes']['days']} days a split. "
             "First alert by window (age) and rule; then with each tenant's first window "
             "left unjudged.", "",
             "| split / mode | ordinary benign flagged | by first window | attackers caught "
             "| by first window | first window unjudged: benign | : attackers |",
             "|---|---:|---|---:|---|---:|---:|"]
    for name, r in result["runs"].items():
        a, s = r["all_windows"], r["first_window_unjudged"]
        by = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d["by_first_window"].items()))
        lines.append(f"| {name} | {_share(a['ordinary'])} | {by(a['ordinary'])} | "
                     f"{_share(a['attack'])} | {by(a['attack'])} | {_share(s['ordinary'])} | "
                     f"{_share(s['attack'])} |")
    cusum = [(name, c, t) for name, r in result["runs"].items()
             for c, t in r.get("cusum", {}).items()]
    if cusum:
        lines += ["", "A CUSUM over window scores (K, H, HI) instead of one window at 1:", "",
                  "| split / mode | K,H,HI | ordinary benign flagged | attackers caught |",
                  "|---|---|---:|---:|"]
        lines += [f"| {name} | {c} | {_share(t['ordinary'])} | {_share(t['attack'])} |"
                  for name, c, t in cusum]
    lines += ["", "Attack families caught with the first window unjudged:", ""]
    for name, r in result["runs"].items():
        fams = r["families_first_window_unjudged"]
        lines.append(f"- {name}: " + ", ".join(f"{f} {c}/{n}" for f, (c, n) in fams.items()))
    return "\n".join(lines) + "\n"
