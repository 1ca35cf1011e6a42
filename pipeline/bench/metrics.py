"""Detection metrics from per-tenant labels and each tenant's first alert.

A tenant's first alert is what counts (the analyst opens the case then). An attacking
tenant is detected when that alert comes at or after its attack start (an account-takeover
victim flagged *before* the takeover is a miss, counted as ``early``); delay is the number
of the tenant's own queries from the attack start to the alert. A benign tenant with any
alert is a false positive. Hydra campaigns are scored per member account (every account is
a tenant), and per campaign in ``campaigns``.

>>> labels = {"a": {"family": "broad_sweep", "is_attack": True, "attack_start_index": 0,
...                 "hard_negative": False, "active_days": 2, "campaign_id": None},
...           "b": {"family": "focused_app", "is_attack": False, "attack_start_index": None,
...                 "hard_negative": False, "active_days": 3, "campaign_id": None}}
>>> m = evaluate(labels, {"a": 40})
>>> m["tpr"], m["fpr"], m["median_delay"], m["by_family"]["broad_sweep"]["tpr"]
(1.0, 0.0, 40.0, 1.0)
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def _q(values: list[int], q: float) -> float | None:
    return round(float(np.quantile(values, q)), 1) if values else None


def _rate(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def evaluate(labels: dict[str, dict], first_alert: dict[str, int]) -> dict:
    """``first_alert``: tenant -> index (in its own stream) of the event of its first alert."""
    fam = defaultdict(lambda: {"n": 0, "hit": 0, "early": 0, "delays": []})
    benign_days = 0
    camp = defaultdict(lambda: [0, 0])
    for tid, lab in labels.items():
        f = fam[lab["family"]]
        f["n"] += 1
        idx = first_alert.get(tid)
        if lab["is_attack"]:
            start = lab["attack_start_index"] or 0
            hit = idx is not None and idx >= start
            f["hit"] += hit
            f["early"] += idx is not None and idx < start
            if hit:
                f["delays"].append(idx - start)
            if lab.get("campaign_id"):
                camp[lab["campaign_id"]][0] += 1
                camp[lab["campaign_id"]][1] += hit
        else:
            f["hit"] += idx is not None
            benign_days += max(1, lab.get("active_days", 1))
    attack = {k: v for k, v in fam.items() if labels_family_is_attack(labels, k)}
    benign = {k: v for k, v in fam.items() if k not in attack}
    hard = {k: v for k, v in benign.items() if labels_family_is_hard(labels, k)}
    tp = sum(v["hit"] for v in attack.values())
    n_att = sum(v["n"] for v in attack.values())
    fp = sum(v["hit"] for v in benign.values())
    n_ben = sum(v["n"] for v in benign.values())
    fp_hard = sum(v["hit"] for v in hard.values())
    n_hard = sum(v["n"] for v in hard.values())
    delays = [d for v in attack.values() for d in v["delays"]]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_att if n_att else 0.0
    by_family = {}
    for k, v in sorted(fam.items()):
        if k in attack:
            by_family[k] = {"tpr": _rate(v["hit"], v["n"]), "n": v["n"],
                            "median_delay": _q(v["delays"], 0.5), "p90_delay": _q(v["delays"], 0.9)}
            if v["early"]:
                by_family[k]["early"] = v["early"]
        else:
            by_family[k] = {"fpr": _rate(v["hit"], v["n"]), "n": v["n"], "flagged": v["hit"]}
    tprs = [v["hit"] / v["n"] for v in attack.values() if v["n"]]
    return {
        "tpr": _rate(tp, n_att), "tpr_macro": round(float(np.mean(tprs)), 4) if tprs else None,
        "fpr": _rate(fp, n_ben), "fpr_ordinary": _rate(fp - fp_hard, n_ben - n_hard),
        "fpr_hard_negative": _rate(fp_hard, n_hard),
        "fpr_per_1000_tenant_days": round(1000 * fp / benign_days, 2) if benign_days else None,
        "f1": round(2 * precision * recall / (precision + recall), 4) if tp else 0.0,
        "median_delay": _q(delays, 0.5), "p90_delay": _q(delays, 0.9),
        "attackers": n_att, "benign": n_ben, "false_positives": fp,
        "campaigns": {c: {"accounts": n, "flagged": h} for c, (n, h) in sorted(camp.items())},
        "by_family": by_family,
    }


def labels_family_is_attack(labels: dict[str, dict], family: str) -> bool:
    return any(v["is_attack"] for v in labels.values() if v["family"] == family)


def labels_family_is_hard(labels: dict[str, dict], family: str) -> bool:
    return any(v.get("hard_negative") for v in labels.values() if v["family"] == family)


def campaign_metrics(labels: dict[str, dict], named: dict[str, int],
                     before: int = 200) -> dict:
    """Campaign-stage naming: ``named`` is account -> its own query index when a campaign
    alert first named it.

    >>> labels = {"h1": {"family": "hydra", "is_attack": True},
    ...           "h2": {"family": "hydra", "is_attack": True},
    ...           "b": {"family": "focused_app", "is_attack": False}}
    >>> m = campaign_metrics(labels, {"h1": 60, "h2": 250})
    >>> m["hydra_members_named_before_200"], m["hydra_members_named"], m["benign_named"]
    (0.5, 1.0, 0)
    """
    hydra = [t for t, lab in labels.items() if lab["family"] == "hydra"]
    benign = [t for t, lab in labels.items() if not lab["is_attack"]]
    early = sum(1 for t in hydra if t in named and named[t] < before)
    by_family: dict[str, int] = defaultdict(int)
    for t in named:
        if t in labels:
            by_family[labels[t]["family"]] += 1
    idx = [named[t] for t in hydra if t in named]
    return {
        f"hydra_members_named_before_{before}": _rate(early, len(hydra)),
        "hydra_members_named": _rate(len(idx), len(hydra)),
        "hydra_members": len(hydra),
        "median_naming_index": _q(idx, 0.5), "p90_naming_index": _q(idx, 0.9),
        "benign_named": sum(1 for t in benign if t in named), "benign": len(benign),
        "named_by_family": dict(sorted(by_family.items())),
    }
