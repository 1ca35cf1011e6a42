"""``coverwatch bench lofo``: each attack family scored by a detector chosen without it.

The honest estimate of an attack nobody here has seen. Model selection is the part of the
detector that looked at attacks: which features each rule combines (its *form*). So for
every attack family F, the form of the coverage rule and of the drift rule is chosen among
:data:`COVERAGE_FORMS` x :data:`DRIFT_FORMS` on the **calib** split (calib prompt sources),
with F's tenants removed, to maximise the mean TPR of the other families; each form's scale
is the 99th percentile of the calib split's ordinary benign tenants (no attack involved).
Then F is scored on the **report** split (other prompt sources, other randomness) with
that choice. The chain-of-thought, client and novelty rules keep their one form.

The shipped forms are among the candidates (the first of each list). Every candidate form
runs inside one detector pass per split (the candidate rules are
appended to :data:`pipeline.detect.coverwatch.RULES` with a scale so large that they never
fire or change which windows teach the population), so a tenant's score under a form is
its largest window score for that rule, exactly as the shipped rule would compute it. The
campaign stage is left out: this measures the per-tenant rules alone.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import numpy as np

from pipeline.bench import save
from pipeline.bench.detect import (events_for, get_text_embedder, modes_of, prior_for,
                                   single_thread_blas, window_summaries)
from pipeline.simulate.tenants import ATTACKS
from pipeline.simulate.traffic import generate

COVERAGE_FORMS = (("growth", "spread6", "newp", "rare"), ("growth", "spread6", "newp"),
                  ("growth", "spread", "newp"),
                  ("growth", "spread"), ("nov12", "spread", "newp"), ("growth", "nov12", "newp"),
                  ("spread", "newp", "out_tok"))
DRIFT_FORMS = (("cdrift", "xspread"), ("cdrift", "nov12"), ("cdrift",))
SIZES = {"quick": {"tenants": 150, "days": 2}, "full": {"tenants": 400, "days": 7}}
BENIGN_QUANTILE = 99


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--modes", default="provided,text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/lofo.json")


def tenant_maxima(split: str, mode: str, seed: int, sizes: dict):
    """Per tenant, the largest unscaled window score of every shipped and candidate rule."""
    from pipeline.detect import coverwatch as cw
    saved = cw.RULES, cw.RULE_SCALES, cw._RULE_IDX, cw._RULE_GATES
    extra = [(f"cov:{'+'.join(f)}", "mean", f) for f in COVERAGE_FORMS] + \
            [(f"drift:{'+'.join(f)}", "min", f) for f in DRIFT_FORMS]
    try:
        cw.RULES = saved[0] + tuple(extra)
        cw.RULE_SCALES = saved[1] + (1e6,) * len(extra)
        cw._RULE_IDX = [[cw._IDX[f] for f in feats] for _, _, feats in cw.RULES]
        cw._RULE_GATES = saved[3] + [()] * len(extra)
        traffic = generate(split, seed=seed, mode=mode, **sizes)
        det = cw.CoverwatchDetector(prior=prior_for(mode))
        names = [r[0] for r in cw.RULES]
        best: dict = defaultdict(lambda: np.full(len(names), -np.inf))
        embedder = get_text_embedder() if mode == "text" else None
        for s in window_summaries(det, events_for(traffic, embedder), batch=1024):
            np.maximum(best[s["tenant_id"]], s["rules"], out=best[s["tenant_id"]])
    finally:
        cw.RULES, cw.RULE_SCALES, cw._RULE_IDX, cw._RULE_GATES = saved
    return names, best, traffic.labels


def choose(names, best, labels, held_out: str | None) -> dict:
    """Scales from calib ordinary benign tenants; forms chosen without ``held_out``."""
    ordinary = [t for t, lab in labels.items() if not lab["is_attack"] and not lab["hard_negative"]]
    scale = {n: max(0.5, float(np.percentile([best[t][j] for t in ordinary if t in best],
                                             BENIGN_QUANTILE)))
             for j, n in enumerate(names)}
    fams = [f for f in ATTACKS if f != held_out]

    def mean_tpr(rules: list[str]) -> float:
        idx = [names.index(r) for r in rules]
        tprs = []
        for f in fams:
            ts = [t for t, lab in labels.items() if lab["family"] == f]
            if ts:
                tprs.append(np.mean([any(best[t][j] >= scale[names[j]] for j in idx)
                                     for t in ts if t in best] or [0.0]))
        return float(np.mean(tprs)) if tprs else 0.0

    fixed = [n for n in names if n in ("cot", "takeover", "novelty")]
    cov = max((n for n in names if n.startswith("cov:")),
              key=lambda n: mean_tpr(fixed + [n]))
    drift = max((n for n in names if n.startswith("drift:")),
                key=lambda n: mean_tpr(fixed + [cov, n]))
    return {"rules": fixed + [cov, drift], "scales": {n: round(scale[n], 3) for n in
                                                      fixed + [cov, drift]}}


def score(names, best, labels, choice: dict, family: str) -> dict:
    idx = [names.index(r) for r in choice["rules"]]
    ts = [t for t, lab in labels.items() if lab["family"] == family]
    hit = [any(best[t][j] >= choice["scales"][names[j]] for j in idx) for t in ts if t in best]
    return {"n": len(ts), "detected": int(sum(hit)), "tpr": round(sum(hit) / max(len(ts), 1), 4)}


def fpr(names, best, labels, choice: dict) -> float:
    idx = [names.index(r) for r in choice["rules"]]
    ben = [t for t, lab in labels.items() if not lab["is_attack"] and not lab["hard_negative"]]
    return round(float(np.mean([any(best[t][j] >= choice["scales"][names[j]] for j in idx)
                                for t in ben if t in best])), 4)


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    single_thread_blas()
    sizes = SIZES["quick" if args.quick else "full"]
    result = {"seed": args.seed, "quick": bool(args.quick), "sizes": sizes, "modes": {}}
    for mode in modes_of(args.modes):
        print(f"[lofo {mode}] calib split ...", file=sys.stderr)
        c_names, c_best, c_labels = tenant_maxima("calib", mode, args.seed, sizes)
        print(f"[lofo {mode}] report split ...", file=sys.stderr)
        r_names, r_best, r_labels = tenant_maxima("report", mode, args.seed, sizes)
        shipped = choose(c_names, c_best, c_labels, None)
        rows = {}
        for fam in ATTACKS:
            choice = choose(c_names, c_best, c_labels, fam)
            rows[fam] = {**score(r_names, r_best, r_labels, choice, fam),
                         "with_all_families": score(r_names, r_best, r_labels, shipped, fam),
                         "chosen": choice, "report_ordinary_fpr": fpr(r_names, r_best,
                                                                      r_labels, choice)}
        result["modes"][mode] = {"families": rows, "all_families_choice": shipped}
    result["seconds"] = round(time.monotonic() - t0, 1)
    md = markdown(result)
    save(args.out, result, md)
    print(md)
    return 0


def markdown(result: dict) -> str:
    lines = ["# Leave-one-family-out (per-tenant rules, report split)", "",
             "Rule forms and scales chosen on the calib split without the family; scored on "
             "the report split. Ordinary-benign FPR of each held-out choice in brackets.", ""]
    modes = list(result["modes"])
    lines += ["| family | " + " | ".join(f"{m}: held out | {m}: all families" for m in modes)
              + " |", "|---|" + "---:|---:|" * len(modes)]
    for fam in ATTACKS:
        cells = []
        for m in modes:
            r = result["modes"][m]["families"][fam]
            cells += [f"{r['tpr']:.0%} of {r['n']} [{r['report_ordinary_fpr']:.1%}]",
                      f"{r['with_all_families']['tpr']:.0%}"]
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    for m in modes:
        lines.append(f"\n`{m}`, all families: {result['modes'][m]['all_families_choice']}")
    return "\n".join(lines) + "\n"
