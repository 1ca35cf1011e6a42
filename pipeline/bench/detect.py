"""``coverwatch bench detect``: our detector and the prior art, side by side, on the same streams.

For each mode (``provided``: events carry MiniLM vectors; ``text``: prompt only, embedded
here in batches by the text embedder exactly as the worker does), it

1. generates *calibration* traffic (calib prompt sources, calib seed salt) and calibrates
   every baseline on its benign tenants (and our detector, if it offers ``calibrate``);
2. generates *report* traffic and drives every detector through the Detector protocol,
   event by event in event-time order (``scored = det.update(event)``);
3. scores each detector's first alert per tenant (:mod:`pipeline.bench.metrics`).

It writes ``detect.json``, ``detect.md`` and ``detect_delay.png`` (next to ``--out``).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np

from pipeline.bench import save
from pipeline.bench.baselines import BASELINES
from pipeline.bench.metrics import campaign_metrics, evaluate
from pipeline.contracts.events import Event
from pipeline.progress import progress_callback
from pipeline.simulate.tenants import ATTACKS, BENIGN
from pipeline.simulate.traffic import Traffic, generate

QUICK = {"report": {"tenants": 60, "days": 2, "hydra_accounts": (30, 40)},
         "calib": {"tenants": 60, "days": 2, "hydra_accounts": (20, 20)}}
FULL = {"report": {"tenants": 400, "days": 7}, "calib": {"tenants": 300, "days": 7}}
TARGET_FPR = 0.01       # tenant-level benign FPR every threshold is calibrated to (calib split)
EMBED_BATCH = 256


LIVE = "live_start"   # a robustness column: the deployment set-up, not an attacker signal
# another: one tenant per attack family (hydras as usual), so attackers are not a fifth of
# the population benign tenants are judged against (a benign verdict must not depend on it)
RARE = "attackers_rare"


class Setup(NamedTuple):
    """A robustness column that changes the deployment, not an attacker signal."""
    options: dict    # generate()'s options
    column: str      # its table column
    label: str       # its progress label
    sentence: str    # what the table says of it


SETUPS = {LIVE: Setup({"live": True}, "every tenant from the first hour", "live start",
                      "with every tenant, attackers included, already active in the first "
                      "hour of the stream (detection starts on a gateway with customers)"),
          RARE: Setup({"attackers": 1}, "one attacker per family", "attackers rare",
                      "with one tenant per attack family (hydras as usual), so attackers are "
                      "not a fifth of the population benign tenants are judged against")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small traffic, a few minutes")
    parser.add_argument("--out", default="bench/results/detect.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="provided,text,metadata",
                        help="comma list: provided (MiniLM vectors in events), text (prompt "
                             "only), metadata (neither: gateways that do not log prompts)")
    parser.add_argument("--robustness",
                        default="answer_length,client,pace,cot_wording,live_start,"
                                "attackers_rare",
                        help="comma list of attacker-controlled signals to make uninformative "
                             "in turn, each a run of coverwatch-online (empty: none); "
                             "live_start: every tenant, attackers included, active from the "
                             "first hour (detection starts on a gateway with customers); "
                             "attackers_rare: one tenant per attack family (benign verdicts "
                             "when attackers are not a fifth of the population)")
    parser.add_argument("--detectors",
                        default="coverwatch,coverwatch-online,volume,prada,coverage,mmd",
                        help="coverwatch-online: our detector as the worker runs it, with no "
                             "calibration (population learned from the report traffic itself)")


def run(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    single_thread_blas()
    sizes = QUICK if args.quick else FULL
    names = [d.strip() for d in args.detectors.split(",") if d.strip()]
    result: dict = {"split": "report", "seed": args.seed, "quick": bool(args.quick),
                    "target_fpr_calib": TARGET_FPR, "modes": {}}
    for mode in modes_of(args.modes):
        report = traffic_for("report", mode, args.seed, sizes["report"])
        if report.stand_in:
            print("warning: prompt corpus not found; benchmarking on the synthetic stand-in "
                  "(numbers say nothing about real traffic)", file=sys.stderr)
        result["events"], result["tenants"] = len(report), len(report.labels)
        result["stand_in"] = report.stand_in
        embedder = get_text_embedder() if mode == "text" else None
        t0 = time.monotonic()
        # Without prompts or vectors, only detectors that need neither can run.
        mode_names = [n for n in names if mode != "metadata" or n in METADATA_DETECTORS]
        dets = calibrate_detectors(mode_names, mode, args.seed, sizes["calib"], embedder)
        calib_s = time.monotonic() - t0
        first, cost = drive(report, dets, embedder, label=f"{mode}")
        result["modes"][mode] = {
            "calibration_s": round(calib_s, 1),
            "detectors": {name: {**evaluate(report.labels, first[name]),
                                 "us_per_event": round(1e6 * cost[name] / len(report), 1)}
                          for name in dets}}
        if "coverwatch" in dets:
            result["modes"][mode]["campaigns"] = {
                **campaign_metrics(report.labels, first["_campaign_named"]),
                "us_per_event": round(1e6 * cost["_campaigns"] / len(report), 1)}
            result["modes"][mode]["hydra_members_named_before_200"] = \
                result["modes"][mode]["campaigns"]["hydra_members_named_before_200"]
        result["modes"][mode]["embed_us_per_event"] = round(1e6 * cost["_embed"] / len(report), 1)
        if mode != "metadata" and args.robustness:
            result["modes"][mode]["robustness"] = robustness(
                mode, args.seed, sizes["report"], embedder,
                [n.strip() for n in args.robustness.split(",") if n.strip()])
    result["seconds"] = round(time.monotonic() - t_start, 1)
    out = save(args.out, result, markdown(result))
    plot(result, out.with_name(out.stem + "_delay.png"))
    print(markdown(result))
    print(f"wrote {out} in {result['seconds']:.0f} s", file=sys.stderr)
    return 0


def single_thread_blas() -> bool:
    """Detectors do small matrix products per event; OpenBLAS threads only contend on them
    (10x slower on a busy 2-core box). Best effort, via the loaded library's own setter."""
    import ctypes
    try:
        with open("/proc/self/maps") as fh:
            libs = {line.split()[-1] for line in fh if "openblas" in line.lower()}
        for path in libs:
            lib = ctypes.CDLL(path)
            for fn in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                       "openblas_set_num_threads"):
                if hasattr(lib, fn):
                    getattr(lib, fn)(1)
                    return True
    except OSError:
        pass
    return False


# ---- detectors -------------------------------------------------------------------------------

def modes_of(arg: str) -> list[str]:
    """The embedding modes a ``--modes`` argument names (comma-separated)."""
    return [m.strip() for m in arg.split(",") if m.strip()]


def prior_for(mode: str) -> str:
    """The shipped prior of a mode's embedding space (metadata-only logs: the text one)."""
    return "provided" if mode == "provided" else "text"


def make_coverwatch(calib_events: list[Event] | None = None, mode: str = "text"):
    """Our detector (with the prior of the mode's embedding space), or BurstDetector (with a
    warning) until pipeline.detect.coverwatch exists."""
    try:
        from pipeline.detect.coverwatch import CoverwatchDetector
    except ImportError as exc:
        from pipeline.detect.burst import BurstDetector
        print(f"warning: CoverwatchDetector unavailable ({exc}); BurstDetector stands in",
              file=sys.stderr)
        return BurstDetector()
    prior = prior_for(mode)
    if calib_events is not None and hasattr(CoverwatchDetector, "calibrate"):
        return CoverwatchDetector.calibrate(calib_events, target_fpr=TARGET_FPR, prior=prior)
    return CoverwatchDetector(prior=prior)


def calibrate_detectors(names: list[str], mode: str, seed: int, sizes: dict,
                        embedder) -> dict:
    calib = traffic_for("calib", mode, seed, sizes)
    benign = {t for t, lab in calib.labels.items() if not lab["is_attack"]}
    events = [e for e in events_for(calib, embedder) if e.tenant_id in benign]
    dets = {}
    for name in names:
        t0 = time.monotonic()
        if name == "coverwatch":
            dets[name] = make_coverwatch(events, mode)
        elif name == "coverwatch-online":
            dets[name] = make_coverwatch(mode=mode)
        else:
            dets[name] = BASELINES[name].calibrate(events, target_fpr=TARGET_FPR)
        print(f"[{mode}] calibrated {name} on {len(events):,} benign calib events "
              f"({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    return dets


# ---- text embedding, as the worker does it ---------------------------------------------------

METADATA_DETECTORS = ("coverwatch", "coverwatch-online", "volume")


def get_text_embedder():
    from pipeline.embed import get_embedder
    return get_embedder("hashing")


def robustness(mode: str, seed: int, sizes: dict, embedder, signals: list[str]) -> dict:
    """``coverwatch-online`` on report traffic where one attacker-controlled signal at a time
    (answer length, client, pace, chain-of-thought wording) has the same distribution for
    attackers and benign tenants: no family may depend on one of them alone; and
    (:data:`SETUPS`) where every tenant is already active when detection starts, or where
    attackers are rare."""
    out = {}
    for signal in signals:
        setup = SETUPS.get(signal) or Setup({"neutral": signal}, "",
                                            f"{signal} uninformative", "")
        traffic = traffic_for("report", mode, seed, sizes, **setup.options)
        first, _ = drive(traffic, {"coverwatch-online": make_coverwatch(mode=mode)}, embedder,
                         label=f"{mode}, {setup.label}")
        out[signal] = evaluate(traffic.labels, first["coverwatch-online"])
    return out


def traffic_for(split: str, mode: str, seed: int, sizes: dict, **options) -> Traffic:
    """Traffic of one mode; ``metadata`` is the text traffic with prompts removed;
    ``options``: :func:`generate`'s (``neutral``, ``live``)."""
    traffic = generate(split, seed=seed, mode="text" if mode == "metadata" else mode,
                       **options, **sizes)
    traffic.metadata_only = mode == "metadata"
    return traffic


_EMBED_COST = [0.0]


def events_for(traffic: Traffic, embedder) -> Iterator[Event]:
    """Validated events in time order; prompt-only events embedded in batches first."""
    batch: list[Event] = []
    strip = getattr(traffic, "metadata_only", False)
    for ev in traffic.iter_parsed():
        if strip:
            ev.prompt = None
        batch.append(ev)
        if len(batch) == EMBED_BATCH:
            yield from _embed_batch(batch, embedder)
            batch = []
    yield from _embed_batch(batch, embedder)


def window_summaries(det, events: Iterable[Event], batch: int = 2048) -> Iterator[dict]:
    """Every window summary our detector emits over ``events``, fed in batches as the
    worker feeds it."""
    buf: list[Event] = []
    for e in events:
        buf.append(e)
        if len(buf) == batch:
            det.update_many(buf)
            yield from det.drain_summaries()
            buf = []
    det.update_many(buf)
    yield from det.drain_summaries()


def _embed_batch(batch: list[Event], embedder) -> list[Event]:
    need = [e for e in batch if e.embedding is None and e.prompt]
    if need and embedder is not None:
        t0 = time.perf_counter()
        vecs = np.asarray(embedder.embed([e.prompt for e in need]), dtype=np.float32)
        for e, v in zip(need, vecs):
            e.embedding = v
        _EMBED_COST[0] += time.perf_counter() - t0
    return batch


# ---- driver ----------------------------------------------------------------------------------

def drive(traffic: Traffic, dets: dict, embedder, label: str = "",
          progress: Callable[..., None] | None = None):
    """Feed every event to every detector; first alert index per tenant, seconds per detector."""
    first: dict[str, dict[str, int]] = {name: {} for name in dets}
    cost = defaultdict(float)
    # the coordinated-campaign stage runs alongside each of our detectors (pipeline.campaigns),
    # as in the worker: an account named in a campaign alert counts as detected by it too
    runners = {name: make_campaign_runner() for name in dets if name.startswith("coverwatch")}
    named: dict[str, int] = {}
    seen: dict[str, int] = defaultdict(int)
    n = len(traffic)
    step = max(1, n // 100)
    _EMBED_COST[0] = 0.0
    t_start = time.monotonic()
    progress = progress or progress_callback()
    for i, ev in enumerate(events_for(traffic, embedder)):
        seen[ev.tenant_id] += 1
        for name, det in dets.items():
            t0 = time.perf_counter()
            scored = det.update(ev)
            cost[name] += time.perf_counter() - t0
            alerts = scored.alerts
            if runners.get(name) is not None:
                t0 = time.perf_counter()
                camp = runners[name].observe([ev], [scored])
                if name == "coverwatch":
                    cost["_campaigns"] += time.perf_counter() - t0
                    for a in camp:
                        for tid in [a.tenant_id, *a.related_tenants]:
                            if tid not in named and seen.get(tid):
                                named[tid] = seen[tid] - 1
                alerts = alerts + camp if camp else alerts
            for a in alerts:
                for tid in [a.tenant_id, *a.related_tenants]:
                    if tid not in first[name] and seen.get(tid):
                        first[name][tid] = seen[tid] - 1
        if i % step == 0 or i == n - 1:
            progress(i + 1, n, label, t_start)
    cost["_embed"] = _EMBED_COST[0]
    first["_campaign_named"] = named
    return first, cost


def make_campaign_runner():
    """The coordinated-campaign stage (sketcher + global stage), None if unavailable."""
    try:
        from pipeline.campaigns import CampaignRunner
    except ImportError as exc:
        print(f"warning: campaign stage unavailable ({exc})", file=sys.stderr)
        return None
    return CampaignRunner()


# ---- reporting -------------------------------------------------------------------------------

def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}%" if pct else (f"{v:g}" if isinstance(v, (int, float)) else str(v))


def markdown(result: dict) -> str:
    lines = [f"# Detection benchmark ({'quick' if result.get('quick') else 'full'}, report split)",
             "",
             f"{result.get('events', 0):,} events, {result.get('tenants', 0):,} tenants per mode; "
             f"every threshold calibrated on the calib split to {TARGET_FPR:.0%} benign-tenant FPR "
             "(MMD: 0.3% of benign windows). Delay = tenant's queries from attack start to its "
             "first alert. Hydra counted per member account."]
    if result.get("stand_in"):
        lines.append("\n**Synthetic stand-in corpus: numbers are a smoke test only.**")
    for mode, m in result["modes"].items():
        dets = m["detectors"]
        lines += ["", f"## mode `{mode}`", "",
                  "| detector | TPR | TPR (family mean) | FPR | FPR / 1k tenant-days | "
                  "hard-neg FPR | F1 | median delay | p90 delay | µs/event |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, d in dets.items():
            lines.append(
                f"| {name} | {_fmt(d['tpr'], 1)} | {_fmt(d['tpr_macro'], 1)} | "
                f"{_fmt(d['fpr'], 1)} | {_fmt(d['fpr_per_1000_tenant_days'])} | "
                f"{_fmt(d['fpr_hard_negative'], 1)} | {_fmt(d['f1'])} | "
                f"{_fmt(d['median_delay'])} | {_fmt(d['p90_delay'])} | {_fmt(d['us_per_event'])} |")
        lines += ["", "| family (n) | " + " | ".join(dets) + " |",
                  "|---|" + "---:|" * len(dets)]
        first = next(iter(dets.values()))["by_family"]
        for fam in [f for f in ATTACKS + BENIGN if f in first]:
            cells = []
            for d in dets.values():
                b = d["by_family"].get(fam, {})
                if "tpr" in b:
                    cells.append(f"{_fmt(b['tpr'], 1)} @ {_fmt(b['median_delay'])}")
                else:
                    cells.append(f"{_fmt(b.get('fpr'), 1)} FP")
            lines.append(f"| {fam} ({first[fam]['n']}) | " + " | ".join(cells) + " |")
        lines.append("\nAttack rows: TPR @ median delay (queries). Benign rows: share flagged.")
        rob = m.get("robustness")
        if rob:
            base = dets.get("coverwatch-online")
            cols = ([("as generated", base)] if base else []) + [
                (SETUPS[k].column if k in SETUPS
                 else f"{k.replace('_', ' ')} uninformative", v) for k, v in rob.items()]
            lines += ["", "Robustness: `coverwatch-online` with one attacker-controlled signal "
                      "at a time drawn from the benign tenants' distribution"
                      + "".join(f"; {SETUPS[k].sentence}" for k in rob if k in SETUPS) + ".", "",
                      "| family | " + " | ".join(c for c, _ in cols) + " |",
                      "|---|" + "---:|" * len(cols)]
            for fam in [f for f in ATTACKS + BENIGN if f in first]:
                cells = []
                for _, d in cols:
                    b = d["by_family"].get(fam, {})
                    cells.append(_fmt(b.get("tpr"), 1) if "tpr" in b
                                 else f"{_fmt(b.get('fpr'), 1)} FP")
                lines.append(f"| {fam} | " + " | ".join(cells) + " |")
            lines.append("| **all attackers (TPR) / benign (FPR)** | " + " | ".join(
                f"{_fmt(d['tpr'], 1)} / {_fmt(d['fpr'], 1)}" for _, d in cols) + " |")
        c = m.get("campaigns")
        if c:
            lines.append(f"\nCampaign stage (counted in coverwatch above): "
                         f"{_fmt(c['hydra_members_named_before_200'], 1)} of hydra member accounts "
                         f"named before their 200th query ({_fmt(c['hydra_members_named'], 1)} "
                         f"ever); benign accounts named: {c['benign_named']} of {c['benign']}; "
                         f"{_fmt(c['us_per_event'])} µs/event.")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(result["modes"])
    fig, axes = plt.subplots(len(modes), 1, figsize=(11, 3.6 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        dets = result["modes"][mode]["detectors"]
        fams = [f for f in ATTACKS if f in next(iter(dets.values()))["by_family"]]
        width = 0.8 / max(len(dets), 1)
        for j, (name, d) in enumerate(dets.items()):
            med = [d["by_family"][f]["median_delay"] for f in fams]
            p90 = [d["by_family"][f]["p90_delay"] for f in fams]
            x = np.arange(len(fams)) + (j - (len(dets) - 1) / 2) * width
            y = np.array([np.nan if v is None else max(v, 0.5) for v in med])
            err = np.array([0 if (a is None or b is None) else max(b - a, 0)
                            for a, b in zip(med, p90)])
            ax.bar(x, y, width, label=name, yerr=[np.zeros_like(err), err], capsize=2)
            for xi, f in zip(x, fams):
                tpr = d["by_family"][f]["tpr"]
                ax.text(xi, 0.02, f"{100 * (tpr or 0):.0f}%", ha="center", va="bottom",
                        fontsize=6, rotation=90, transform=ax.get_xaxis_transform())
        ax.set_yscale("log")
        ax.set_ylim(1, 2e4)
        ax.set_xticks(np.arange(len(fams)), fams, fontsize=8)
        ax.set_ylabel("queries to detection")
        ax.set_title(f"mode {mode}: median delay (bar), p90 (whisker), TPR % (label); "
                     "missing bar = never detected", fontsize=9)
        ax.legend(fontsize=7, ncol=len(dets))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
