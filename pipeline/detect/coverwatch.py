"""The coverwatch detector: per-tenant coverage, templating and drift, scored against the population.

Per event (a few microseconds): the event's vector becomes a 64-bit sign-projection code
(:mod:`pipeline.detect.lsh`; :meth:`CoverwatchDetector.update_many` hashes a whole batch
with one matrix multiply), whose low bits are its locality cells; the tenant's bitmaps say
whether the cell is new to the tenant, a 32-query ring gives the distance to its nearest
recent query, and the prompt (when present) gives a template skeleton and a
chain-of-thought flag (:mod:`pipeline.detect.features`).

Every ``window`` events the tenant emits a window summary (a feature vector). It is scored
against the population of window summaries of all tenants *at the same age*
(:mod:`pipeline.detect.population`) plus one River HalfSpaceTrees model, and the alert
policy (hysteresis, cooldown, severity) decides whether to alert. Population statistics are
learned online from the traffic, without labels; until a population is warm
(``min_windows`` summaries at the tenant's age or younger) nothing alerts.

>>> import numpy as np
>>> from pipeline.contracts.events import Event
>>> rng = np.random.default_rng(0)
>>> det = CoverwatchDetector(window=20, min_windows=20, seed=1)
>>> t0 = 1767225600000
>>> topics = rng.standard_normal((5, 16))
>>> def focused(t, i):      # tenants re-asking around five topics
...     v = topics[i % 5] + 0.05 * rng.standard_normal(16)
...     return Event(f"{t}-{i}", t0 + i * 1000, t, embedding=v.astype(np.float32))
>>> for i in range(100):
...     _ = det.update_many([focused(f"app{j}", i) for j in range(40)])
>>> alerts = []
>>> for i in range(100):    # a sweeper: every query somewhere new
...     v = rng.standard_normal(16).astype(np.float32)
...     alerts += det.update(Event(f"s-{i}", t0 + i * 1000, "sweeper", embedding=v)).alerts
>>> [(a.tenant_id, a.detector.split("+")[0], a.events_seen) for a in alerts]
[('sweeper', 'coverage', 20)]
>>> det.dump_tenant("nobody") is None
True
"""
from __future__ import annotations

import math
import pickle
from collections import deque
from typing import Iterable

import numpy as np
from river.anomaly import HalfSpaceTrees

from pipeline.contracts.alerts import Alert
from pipeline.contracts.events import Event
from pipeline.detect.base import Scored
from pipeline.detect.features import FEATURES, TenantState, observe, summarise
from pipeline.detect.lsh import SignProjector
from pipeline.detect.policy import GROUPS, describe
from pipeline.detect.population import Population, age_bucket, feeds_population

ALL_FEATURES = FEATURES + ("hst",)
# Features whose *high* values mean extraction, and the smallest median-to-p99 distance
# allowed (so a population where everyone sits at 0 does not make 0.01 look extreme).
SCORED = {"nov8": 0.15, "nov12": 0.15, "nov14": 0.15, "near": 0.15, "tmpl": 0.15,
          "cot": 0.15, "growth": 0.1, "drift": 0.2, "hst": 0.1}
_IDX = {f: i for i, f in enumerate(ALL_FEATURES)}
_SCORED_IDX = np.array([_IDX[f] for f in SCORED])
_FLOOR = np.array(list(SCORED.values()))
_HST_KEYS = [f for f in FEATURES]
SUMMARY_BUFFER = 10_000


class CoverwatchDetector:
    """Streaming extraction detector implementing :class:`pipeline.detect.base.Detector`.

    Parameters
    ----------
    window
        Events per tenant window summary (and between two alert decisions).
    threshold
        Exceedance (1.0 = at the population's 99th percentile) at which an alert opens.
    release
        Exceedance below which an open alert episode closes (hysteresis; < threshold).
    critical
        Exceedance at which the alert is ``critical`` rather than ``warning``.
    cooldown
        Events after an episode closes during which the tenant cannot open a new one.
    min_windows
        Window summaries an age bucket needs before its thresholds hold (warm-up).
    near_bits
        SimHash distance (of 64 bits) under which a query is a near-duplicate.
    hst_trees, hst_height, hst_window
        Size of the one population HalfSpaceTrees model.
    seed
        Seed of the random hyperplanes and of the HalfSpaceTrees.
    """

    name = "coverwatch"

    def __init__(self, window: int = 50, threshold: float = 1.5, release: float = 0.8,
                 critical: float = 3.0, cooldown: int = 500, min_windows: int = 30,
                 near_bits: int = 10, hst_trees: int = 10, hst_height: int = 8,
                 hst_window: int = 250, seed: int = 42):
        self.window = window
        self.threshold = threshold
        self.release = release
        self.critical = critical
        self.cooldown = cooldown
        self.min_windows = min_windows
        self.near_bits = near_bits
        self.hst_trees = hst_trees
        self.hst_height = hst_height
        self.hst_window = hst_window
        self.seed = seed
        if window < 2 or min_windows < 1 or cooldown < 0 or not 0 <= near_bits < 64:
            raise ValueError("need window >= 2, min_windows >= 1, cooldown >= 0, "
                             "0 <= near_bits < 64")
        if not 0 < release < threshold <= critical:
            raise ValueError("need 0 < release < threshold <= critical")
        if hst_trees < 1 or hst_height < 1 or hst_window < 1:
            raise ValueError("HalfSpaceTrees sizes must be >= 1")
        self._reset()

    def _reset(self) -> None:
        self._proj = SignProjector(self.seed)
        self._tenants: dict[str, TenantState] = {}
        self._pop = Population(len(ALL_FEATURES), min_windows=self.min_windows)
        self._hst = HalfSpaceTrees(n_trees=self.hst_trees, height=self.hst_height,
                                   window_size=self.hst_window, seed=self.seed)
        self._summaries: deque = deque(maxlen=SUMMARY_BUFFER)

    def __repr__(self) -> str:
        return (f"CoverwatchDetector(window={self.window}, threshold={self.threshold}, "
                f"release={self.release}, critical={self.critical}, cooldown={self.cooldown}, "
                f"min_windows={self.min_windows}, near_bits={self.near_bits}, "
                f"seed={self.seed})")

    def clone(self) -> CoverwatchDetector:
        """A fresh detector with the same parameters and no state."""
        return CoverwatchDetector(**self._params())

    def _params(self) -> dict:
        return {k: getattr(self, k) for k in (
            "window", "threshold", "release", "critical", "cooldown", "min_windows",
            "near_bits", "hst_trees", "hst_height", "hst_window", "seed")}

    # -- the protocol -------------------------------------------------------------------
    def update(self, event: Event) -> Scored:
        emb = event.embedding
        code = self._proj.code(emb) if emb is not None and len(emb) else None
        return self._update(event, code)

    def update_many(self, events: Iterable[Event]) -> list[Scored]:
        events = list(events)
        codes: list[int | None] = [None] * len(events)
        by_dim: dict[int, list[int]] = {}
        for i, e in enumerate(events):
            if e.embedding is not None and len(e.embedding):
                by_dim.setdefault(len(e.embedding), []).append(i)
        for idx in by_dim.values():
            got = self._proj.codes(np.stack([events[i].embedding for i in idx]))
            for i, c in zip(idx, got.tolist()):
                codes[i] = c
        return [self._update(e, c) for e, c in zip(events, codes)]

    def dump_tenant(self, tenant_id: str) -> bytes | None:
        s = self._tenants.get(tenant_id)
        return None if s is None else pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)

    def load_tenant(self, tenant_id: str, state: bytes) -> None:
        s = pickle.loads(state)
        if not isinstance(s, TenantState):
            raise ValueError("not a coverwatch tenant state")
        self._tenants[tenant_id] = s

    def dump_population(self) -> bytes:
        """The shared population model (histograms and HalfSpaceTrees), for checkpoints."""
        return pickle.dumps((self._pop, self._hst), protocol=pickle.HIGHEST_PROTOCOL)

    def load_population(self, state: bytes) -> None:
        pop, hst = pickle.loads(state)
        if not isinstance(pop, Population) or not isinstance(hst, HalfSpaceTrees):
            raise ValueError("not a coverwatch population state")
        self._pop, self._hst = pop, hst

    def drain_summaries(self) -> list[dict]:
        """Window summaries emitted since the last call (for the coordinated-campaign stage)."""
        out = list(self._summaries)
        self._summaries.clear()
        return out

    @property
    def tenants(self) -> int:
        return len(self._tenants)

    # -- internals ----------------------------------------------------------------------
    def _update(self, event: Event, code: int | None) -> Scored:
        s = self._tenants.get(event.tenant_id)
        if s is None:
            s = self._tenants[event.tenant_id] = TenantState()
        cell, novel = observe(s, code, event.prompt, event.ts_ms, event.output_tokens,
                              self.near_bits)
        scored = Scored(cell=cell, novel=novel, score=s.smooth, drift=s.drift_level)
        if s.w_n >= self.window:
            self._close_window(s, event, scored)
        return scored

    def _close_window(self, s: TenantState, event: Event, scored: Scored) -> None:
        w_v, w_p, w_tok = s.w_v, s.w_p, s.w_tok_n
        feats = summarise(s)
        k = s.windows
        bucket = age_bucket(k)
        x_hst = {f: (0.0 if math.isnan(v) else v) for f, v in feats.items()}
        hst = self._hst.score_one(x_hst) if self._hst.trees else 0.0
        feats["hst"] = hst if not self._hst._first_window else float("nan")
        x = np.array([feats[f] for f in ALL_FEATURES])
        q = self._pop.quantiles(bucket)
        raw, fired, top = 0.0, [], None
        if q is not None:
            med, p99 = q[_SCORED_IDX, 0], q[_SCORED_IDX, 2]
            ex = (x[_SCORED_IDX] - med) / np.maximum(p99 - med, _FLOOR)
            ex = np.where(np.isnan(ex), 0.0, ex)
            j = int(np.argmax(ex))
            raw = float(ex[j])
            names = list(SCORED)
            top = (names[j], float(x[_SCORED_IDX[j]]), float(p99[j]))
            fired = [names[i] for i in np.argsort(-ex, kind="stable") if ex[i] >= self.threshold]
        if feeds_population(k):
            self._pop.learn(bucket, x)
            self._hst.learn_one(x_hst)
        s.smooth = 0.5 * s.smooth + 0.5 * raw if raw < s.smooth else raw
        scored.score = s.smooth
        scored.drift = s.drift_level
        summary = {"tenant_id": event.tenant_id, "ts_ms": event.ts_ms, "events_seen": s.n,
                   "window": k, "features": feats, "score": raw,
                   "cells_minhash": list(s.minhash)}
        scored.summary = summary
        self._summaries.append(summary)
        self._policy(s, event, scored, raw, fired, top, feats, (w_v, w_p, w_tok))

    def _policy(self, s, event, scored, raw, fired, top, feats, had) -> None:
        if s.alerting:
            if s.smooth < self.release:
                s.alerting = False
                s.quiet_until = s.n + self.cooldown
            elif raw >= self.critical and s.last_fired != "critical":
                scored.alerts.append(self._alert(s, event, raw, fired, top, feats, had,
                                                 "critical"))
            return
        if s.n < s.quiet_until or raw < self.threshold or not fired:
            return
        s.alerting = True
        s.episode += 1
        s.last_fired = ""
        sev = "critical" if raw >= self.critical else "warning"
        scored.alerts.append(self._alert(s, event, raw, fired, top, feats, had, sev))

    def _alert(self, s, event, raw, fired, top, feats, had, severity) -> Alert:
        s.last_fired = severity
        groups = []
        for f in fired:
            g = GROUPS[f]
            if g not in groups:
                groups.append(g)
        detector = "+".join(groups)
        w_v, w_p, w_tok = had
        signals = [name for name, n in (("embedding", w_v), ("prompt", w_p),
                                        ("tokens", w_tok)) if n] + ["timing"]
        feature, value, p99 = top
        summary = describe(feature, value, p99, self.window, s.n)
        evidence = {"summary": f"Tenant {event.tenant_id} {summary}.",
                    "signals": signals, "fired": fired,
                    "features": {f: round(v, 4) for f, v in feats.items() if not math.isnan(v)},
                    "population_p99": round(p99, 4), "window": self.window}
        return Alert.new(tenant_id=event.tenant_id, detector=detector, ts_ms=event.ts_ms,
                         severity=severity, score=raw, threshold=self.threshold,
                         events_seen=s.n, evidence=evidence,
                         episode=f"{s.episode}:{severity}")
