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
- with ``--policy`` (repeatable), the alerts other decision rules over the same window
  scores would raise instead of one window at 1 (:func:`parse_policy`): a higher threshold,
  a stricter first window, the mean of the last M windows, a CUSUM. Broad chat products'
  first windows score like a sweep's; their later windows fall well below, a sweep's stay
  near 1 (issue 14). Policies are compared at matched false positives: one that only moves
  along the window score's own trade-off is no better than a higher threshold.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict

import numpy as np

from pipeline.bench import save
from pipeline.bench.detect import (events_for, get_text_embedder, modes_of, prior_for,
                                   single_thread_blas, window_summaries)
from pipeline.bench.lofo import SIZES
from pipeline.simulate.traffic import generate

AGES = ((1, "1"), (3, "2-3"), (15, "4-15"), (1 << 62, "16+"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="150 tenants, 2 days")
    parser.add_argument("--modes", default="provided,text")
    parser.add_argument("--splits", default="calib,report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/alert_age.json")
    parser.add_argument("--policy", action="append", default=[], metavar="KIND:ARGS",
                        help="also tally another decision rule over the window scores "
                             "(repeatable): threshold:T, first:HI,T, mean:M,T,HI, cusum:K,H,HI")


def window_scores(split: str, mode: str, seed: int, sizes: dict, one_scale: bool = False):
    """Per tenant, ``[(window, events_seen, scaled rule scores)]`` in order, and the labels.
    ``one_scale``: every rule at one scale for all ages (:data:`RULE_SCALES`, the detector
    before per-age coverage scales), for the side-by-side comparison."""
    from pipeline.detect.coverwatch import CoverwatchDetector, default_scales
    from pipeline.detect.population import age_bucket
    traffic = generate(split, seed=seed, mode=mode, **sizes)
    # the prior of the mode's embedding space, as bench detect and a configured worker use
    prior = prior_for(mode)
    scales = default_scales(None if one_scale else prior)   # None: RULE_SCALES at every age
    det = CoverwatchDetector(prior=prior, rule_scales=scales)
    seq: dict = defaultdict(list)
    embedder = get_text_embedder() if mode == "text" else None
    for s in window_summaries(det, events_for(traffic, embedder), batch=1024):
        seq[s["tenant_id"]].append((s["window"], s["events_seen"],
                                    np.asarray(s["rules"]) / scales[:, age_bucket(s["window"])]))
    return seq, traffic.labels


def parse_policy(spec: str):
    """A decision rule over one tenant's window scores, from ``KIND:ARGS``: a function of
    the tenant's top window scores so far (the last is the window being judged) that says
    whether that window alerts.

    - ``threshold:T``: the window reaches T (the shipped rule is ``threshold:1``);
    - ``first:HI,T``: the tenant's first window reaches HI, any later one T (every query
      of a first window is new to the tenant, for benign tenants too);
    - ``mean:M,T,HI``: the window and the mean of the last M windows reach T, or the
      window reaches HI (persistence);
    - ``cusum:K,H,HI``: the running sum of (score - K), floored at 0, reaches H, or the
      window reaches HI.

    >>> [parse_policy("mean:2,0.9,1.2")(t) for t in ([1.1], [1.1, 0.8], [1.1, 0.8, 1.0])]
    [False, False, True]
    >>> [parse_policy("cusum:0.5,0.75,9")(t) for t in ([0.75], [0.75, 1.0], [0.75, 1.0, 0.25])]
    [False, True, False]
    """
    kind, _, args = spec.partition(":")
    a = [float(x) for x in args.split(",") if x]
    need = {"threshold": 1, "first": 2, "mean": 3, "cusum": 3}
    if need.get(kind) != len(a):
        raise ValueError(f"policy {spec!r}: want threshold:T, first:HI,T, mean:M,T,HI or "
                         f"cusum:K,H,HI")
    if kind == "threshold":
        return lambda tops: tops[-1] >= a[0]
    if kind == "first":
        return lambda tops: tops[-1] >= (a[0] if len(tops) == 1 else a[1])
    if kind == "mean":
        m = int(a[0])
        return lambda tops: tops[-1] >= a[2] or (
            len(tops) >= m and tops[-1] >= a[1] and sum(tops[-m:]) / m >= a[1])

    def cusum(tops: list) -> bool:
        total = 0.0
        for t in tops:
            total = max(0.0, total + t - a[0])
        return total >= a[1] or tops[-1] >= a[2]
    return cusum


SHIPPED = parse_policy("threshold:1")


def first_alert(windows: list, label: dict, skip_first: bool = False, policy=SHIPPED):
    """(window, rule index) of the tenant's first window that alerts under ``policy``
    (:func:`parse_policy`; default: a rule at or above 1), for an attacker only after its
    attack started, or None."""
    start = label.get("attack_start_index") or 0
    tops: list[float] = []
    for k, seen, s in windows:
        tops.append(float(s.max()))
        if (skip_first and k == 1) or (label["is_attack"] and seen <= start):
            continue
        if policy(tops):
            return k, int(s.argmax())
    return None


def tally(seq: dict, labels: dict, skip_first: bool = False, policy=SHIPPED) -> dict:
    from pipeline.detect.coverwatch import RULES
    out = {}
    for kind in ("ordinary", "attack"):
        ts = [t for t, lab in labels.items() if t in seq and (
            lab["is_attack"] if kind == "attack" else not (lab["is_attack"] or lab["hard_negative"]))]
        by: Counter = Counter()
        for t in ts:
            got = first_alert(seq[t], labels[t], skip_first, policy)
            if got:
                age = next(name for hi, name in AGES if got[0] <= hi)
                by[f"{age}:{RULES[got[1]][0]}"] += 1
        out[kind] = {"tenants": len(ts), "flagged": sum(by.values()), "by_first_window": dict(by)}
    return out


def compare(seq: dict, labels: dict, policy) -> dict:
    """One decision rule's trade-off: ordinary and hard-negative benign tenants flagged,
    attack families other than hydra caught (mean and worst), hydra members caught (the
    campaign stage, not counted here, names most of them)."""
    flagged = {False: [0, 0], True: [0, 0]}
    fams: dict = {}
    for t, lab in labels.items():
        if t not in seq:
            continue
        got = first_alert(seq[t], lab, policy=policy) is not None
        row = fams.setdefault(lab["family"], [0, 0]) if lab["is_attack"] \
            else flagged[bool(lab["hard_negative"])]
        row[0] += got
        row[1] += 1
    share = {f: c / n for f, (c, n) in fams.items() if f != "hydra"}
    hydra = fams.get("hydra", [0, 0])
    return {"ordinary_fpr": round(flagged[False][0] / max(flagged[False][1], 1), 4),
            "hard_negative_fpr": round(flagged[True][0] / max(flagged[True][1], 1), 4),
            "family_mean": round(sum(share.values()) / max(len(share), 1), 4),
            "family_min": round(min(share.values(), default=0.0), 4),
            "hydra": round(hydra[0] / max(hydra[1], 1), 4)}


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
    for mode in modes_of(args.modes):
        for split in [s for s in args.splits.split(",") if s]:
            print(f"[age] {split} split, {mode} ...", file=sys.stderr)
            for name, one in (("coverwatch", False), ("one scale", True)):
                seq, labels = window_scores(split, mode, args.seed, sizes, one_scale=one)
                result["runs"][f"{split}/{mode}/{name}"] = {
                    "all_windows": tally(seq, labels),
                    "first_window_unjudged": tally(seq, labels, True),
                    "families_first_window_unjudged": families(seq, labels, True),
                    "policies": {p: compare(seq, labels, parse_policy(p))
                                 for p in ([] if one else ["threshold:1"] + args.policy)}}
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
    pol = [(name, p, t) for name, r in result["runs"].items()
           for p, t in r.get("policies", {}).items()]
    if pol:
        lines += ["", "Other decision rules over the same window scores (threshold:1 is what "
                  "ships; families: all but hydra, whose members the campaign stage names):", "",
                  "| split / mode | rule | ordinary benign flagged | hard negatives flagged "
                  "| family mean | worst family | hydra members |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {name.rsplit('/', 1)[0]} | {p} | {t['ordinary_fpr']:.1%} | "
                  f"{t['hard_negative_fpr']:.1%} | {t['family_mean']:.0%} | "
                  f"{t['family_min']:.0%} | {t['hydra']:.0%} |" for name, p, t in pol]
    lines += ["", "Attack families caught with the first window unjudged:", ""]
    for name, r in result["runs"].items():
        fams = r["families_first_window_unjudged"]
        lines.append(f"- {name}: " + ", ".join(f"{f} {c}/{n}" for f, (c, n) in fams.items()))
    return "\n".join(lines) + "\n"
