"""A population prior shipped with the package, so a small gateway is judged from minute one.

The detector compares each tenant's windows with the population of all tenants' windows at
the same age (:mod:`pipeline.detect.population`), learned online. A gateway with 20-50
tenants, or any gateway in its first hours, has almost no population: no age bucket is warm
and nothing is scored. The prior is the population learned from *public* traffic: the
benign tenants of the calib prompt split (``coverwatch simulate``; never the report split
the benchmark publishes), run online, as per-bucket feature histograms. Cell features depend
on the embedding space, so there is one prior per space: ``text`` (prompts embedded by the
default text embedder, what a gateway that logs prompts gets) and ``provided`` (MiniLM-384
vectors in the events). Vectors from another model should run without a prior.

Each bucket's prior counts as :data:`pipeline.detect.population.PRIOR_WEIGHT` windows,
mixed with the deployment's own (a gateway with thousands of windows a bucket is judged
mostly against itself), and is the fixed reference that decides which windows may teach the
population (an attacker-heavy gateway must not learn its attackers as normal). Measured
(dev harness, 60 tenants of which 55 attackers, 2 days): replacing the prior by the
traffic's own windows once a bucket had 30 of them flagged 9 of 55 attackers (provided) and
8 of 55 (text); mixing it and judging teaching against it, 50 and 41, no ordinary benign
tenant in either.

Build (writes ``pipeline/detect/prior.npz``, needs the corpus)::

    python -m pipeline.detect.prior
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PATH = Path(__file__).with_name("prior.npz")


SPACES = ("text", "provided")
# Features that only mean something against the deployment's own population, so no prior
# carries them: ``rare`` (which cells are rare is a property of *this* gateway's traffic;
# shipping the public traffic's cell density with it cost 27 of 193 attackers on the report
# split and rescued nothing at quick size) and ``hst`` (a model of this population). They
# are scored once their bucket has windows of its own.
LOCAL = ("rare", "hst")


def load(space: str, features: tuple[str, ...], buckets: int,
         bins: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The prior of embedding ``space`` (:data:`SPACES`):
    ``(hist [buckets, features, bins], count [buckets])`` for these feature names (a
    feature the prior does not know, or one of :data:`LOCAL`, gets an empty histogram, so
    it stays unscored until the traffic warms it); None when the package has no prior or
    its shape does not fit."""
    if not PATH.exists():
        return None
    if space not in SPACES:
        raise ValueError(f"prior must be one of {SPACES} or None, not {space!r}")
    with np.load(PATH) as z:
        names = [str(n) for n in z["features"]]
        hist = z[f"hist_{space}"].astype(np.float64)
        count = z[f"count_{space}"].astype(np.float64)
    if hist.shape[0] != buckets or hist.shape[2] != bins:
        return None
    out = np.zeros((buckets, len(features), bins))
    for j, f in enumerate(features):
        if f in names and f not in LOCAL:
            out[:, j] = hist[:, names.index(f)]
    return out, count


def build(tenants: int = 300, days: float = 3.0, seed: int = 0, path: Path = PATH) -> Path:
    """Learn the priors from the calib split's benign tenants (one per space) and save them
    to ``path`` (tests rebuild into a temporary file and compare with the shipped one)."""
    from pipeline.bench.detect import events_for, get_text_embedder, single_thread_blas
    from pipeline.detect.coverwatch import ALL_FEATURES, CoverwatchDetector
    from pipeline.simulate.traffic import generate

    single_thread_blas()
    arrays = {}
    for mode in SPACES:
        traffic = generate("calib", seed=seed, mode=mode, tenants=tenants, days=days)
        if traffic.stand_in:
            raise SystemExit("the prior is learned from the real corpus (../shared/data/prompts)")
        benign = {t for t, lab in traffic.labels.items() if not lab["is_attack"]}
        # windows by count only: the prior says what a tenant's k-th 50 queries look like,
        # the same for every deployment whatever its tenants' pace
        det = CoverwatchDetector(population_windows=10**9, prior=None, window_ms=0)
        batch = []
        embedder = get_text_embedder() if mode == "text" else None
        for e in events_for(traffic, embedder):
            if e.tenant_id in benign:
                batch.append(e)
            if len(batch) == 1024:
                det.update_many(batch)
                batch = []
        det.update_many(batch)
        arrays[f"hist_{mode}"] = det._pop.hist.astype(np.int64)
        arrays[f"count_{mode}"] = det._pop.count.astype(np.int64)
        print(f"[prior] {mode}: {int(det._pop.count.sum()):,} windows of {len(benign)} benign "
              "tenants", file=sys.stderr)
    keep = [j for j, f in enumerate(ALL_FEATURES) if f not in LOCAL]
    for k in list(arrays):
        if k.startswith("hist_"):
            arrays[k] = arrays[k][:, keep]
    np.savez_compressed(path, features=np.array([ALL_FEATURES[j] for j in keep]), **arrays)
    return path


if __name__ == "__main__":
    print(build())
