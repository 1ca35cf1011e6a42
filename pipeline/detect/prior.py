"""A population prior shipped with the package, so a small gateway is judged from minute one.

The detector compares each tenant's windows with the population of all tenants' windows at
the same age (:mod:`pipeline.detect.population`), learned online. A gateway with 20-50
tenants, or any gateway in its first hours, has almost no population: no age bucket is warm
and nothing is scored. The prior is the population learned from *public* traffic: the
benign tenants of the calib prompt split (``coverwatch simulate``; never the report split
the benchmark publishes), run online in both embedding modes (provided MiniLM vectors and
the default text embedder), as per-bucket feature histograms.

It is loaded with the weight of :data:`PRIOR_WINDOWS` windows per age bucket, so every
bucket is warm at once and the deployment's own windows outweigh it after a few hundred:
the prior starts the population; the traffic refines it.

Build (writes ``pipeline/detect/prior.npz``, needs the corpus)::

    python -m pipeline.detect.prior
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PATH = Path(__file__).with_name("prior.npz")
PRIOR_WINDOWS = 30


def load(features: tuple[str, ...], buckets: int, bins: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(hist [buckets, features, bins] float, count [buckets])`` weighted to
    :data:`PRIOR_WINDOWS` per bucket, for these feature names (a feature the prior does not
    know gets an empty histogram, so it stays unscored until the traffic warms it); None
    when the package has no prior or its shape does not fit."""
    if not PATH.exists():
        return None
    with np.load(PATH) as z:
        names = [str(n) for n in z["features"]]
        hist, count = z["hist"].astype(np.float64), z["count"].astype(np.float64)
    if hist.shape[0] != buckets or hist.shape[2] != bins:
        return None
    out = np.zeros((buckets, len(features), bins))
    for j, f in enumerate(features):
        if f in names:
            out[:, j] = hist[:, names.index(f)]
    weight = np.where(count > 0, PRIOR_WINDOWS / np.maximum(count, 1), 0.0)
    return out * weight[:, None, None], np.where(count > 0, float(PRIOR_WINDOWS), 0.0)


def build(tenants: int = 300, days: float = 3.0, seed: int = 0) -> Path:
    """Learn the prior from the calib split's benign tenants in both modes and save it."""
    from pipeline.bench.detect import events_for, get_text_embedder, single_thread_blas
    from pipeline.detect.coverwatch import ALL_FEATURES, CoverwatchDetector
    from pipeline.simulate.traffic import generate

    single_thread_blas()
    hist = count = None
    for mode in ("provided", "text"):
        traffic = generate("calib", seed=seed, mode=mode, tenants=tenants, days=days)
        if traffic.stand_in:
            raise SystemExit("the prior is learned from the real corpus (../shared/data/prompts)")
        benign = {t for t, lab in traffic.labels.items() if not lab["is_attack"]}
        det = CoverwatchDetector(population_windows=10**9, prior=False)
        batch = []
        embedder = get_text_embedder() if mode == "text" else None
        for e in events_for(traffic, embedder):
            if e.tenant_id in benign:
                batch.append(e)
            if len(batch) == 1024:
                det.update_many(batch)
                batch = []
        det.update_many(batch)
        pop = det._pop
        h = pop.hist / np.maximum(pop.count, 1)[:, None, None]     # each mode weighs the same
        hist = h if hist is None else hist + h
        count = pop.count.astype(np.float64) if count is None else count + pop.count
        print(f"[prior] {mode}: {int(pop.count.sum()):,} windows of {len(benign)} benign tenants",
              file=sys.stderr)
    hist = np.round(hist / 2 * np.maximum(count, 1)[:, None, None]).astype(np.int64)
    np.savez_compressed(PATH, hist=hist, count=count.astype(np.int64),
                        features=np.array(ALL_FEATURES))
    return PATH


if __name__ == "__main__":
    print(build())
