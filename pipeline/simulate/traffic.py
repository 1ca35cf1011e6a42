"""Labelled API traffic built from real prompts: the input of the detection benchmark.

>>> t = generate(split="report", seed=1, tenants=30, days=1, hydra_accounts=(20, 20))
>>> events, labels = t
>>> e = events[0]
>>> {"family", "is_attack", "attack_start_index", "campaign_id"} <= set(labels[e["tenant_id"]])
True
>>> all(a["ts"] <= b["ts"] for a, b in zip(events[:-1], events[1:]))
True

:func:`generate` plans tenants of every family (:mod:`pipeline.simulate.tenants`), merges
their streams in event-time order and renders contract events (DESIGN.md) lazily, so a
million events do not sit in memory as dicts with 384-float lists. Mode ``"provided"``
carries the MiniLM vector of each prompt as ``embedding`` (what a gateway that embeds would
send); mode ``"text"`` sends the prompt only and leaves embedding to the worker.

Labels are per tenant: ``family``, ``is_attack``, ``hard_negative``, ``attack_start_index``
(index of the first attacking query in the tenant's own stream; 0 for pure attackers, None
for benign tenants), ``campaign_id`` (hydra accounts share one), ``n_events`` and
``active_days``. Prompts come from one split of the corpus (:mod:`pipeline.simulate.pool`)
and the random stream is salted by split, so calibration and report traffic share neither
prompts nor randomness. Without the corpus the synthetic stand-in is used
(``Traffic.stand_in`` is True); results on it are for smoke tests only.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from pipeline.contracts.events import Event, validate
from pipeline.simulate import content
from pipeline.simulate import tenants as plans
from pipeline.simulate.pool import Pool, build_pool
from pipeline.simulate.strategies import with_strategies
from pipeline.simulate.tenants import ATTACKS, BENIGN, Ctx, TenantStream
from pipeline.simulate.timing import DAY_MS, SIM_START_MS

SPLIT_SALT = {"calib": 11, "report": 23}
MODES = ("provided", "text")
# Share of the non-hydra tenants per benign family; attack families get ATTACK_SHARE each.
BENIGN_MIX = {"focused_app": 0.36, "general_chat": 0.14, "chat_product": 0.12,
              "coding_assistant": 0.12, "feature_add": 0.08, "batch_job": 0.09,
              "benchmark_run": 0.09}
ATTACK_SHARE, MIN_PER_ATTACK = 0.02, 3
DEFAULT_TENANTS, DEFAULT_DAYS = 400, 7


@dataclass
class Traffic:
    """Generated traffic: columns in event-time order plus per-tenant labels.

    Iterating unpacks to ``(events, labels)``; ``events`` is a lazy sequence of dicts.
    """

    split: str
    seed: int
    mode: str
    start_ms: int
    end_ms: int
    labels: dict[str, dict]
    pool: Pool
    tenant_ids: list[str]          # index -> tenant_id
    tenant: np.ndarray             # per event: tenant index
    ts: np.ndarray                 # per event: epoch ms
    rows: np.ndarray               # per event: pool row
    templates: np.ndarray          # per event: template id or -1
    attacking: np.ndarray          # per event: bool
    fields: dict[str, np.ndarray]  # per event: output_tokens, latency_ms, status, key, ip
    streams: list[TenantStream]
    account_ages: bool = False     # events carry account_created_at

    @property
    def stand_in(self) -> bool:
        return self.pool.stand_in

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / DAY_MS

    def __len__(self) -> int:
        return len(self.ts)

    def __iter__(self):
        return iter((self.events, self.labels))

    @property
    def events(self) -> EventList:
        return EventList(self)

    def vectors(self, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Provided (MiniLM) vectors of the given events, float32 - fast path for tuning."""
        return content.templated_vectors(self.pool.embeddings[self.rows[idx]],
                                         self.templates[idx])

    def prompts(self, idx: Sequence[int]) -> list[str]:
        return [content.render_text(self.pool.texts[self.rows[i]], int(self.templates[i]))
                for i in idx]

    def iter_events(self, start: int = 0, stop: int | None = None,
                    chunk: int = 4096) -> Iterator[dict]:
        stop = len(self) if stop is None else min(stop, len(self))
        for lo in range(start, stop, chunk):
            hi = min(lo + chunk, stop)
            vecs = None
            if self.mode == "provided":
                vecs = np.round(self.vectors(slice(lo, hi)), 5).tolist()
            for i in range(lo, hi):
                yield self._event(i, None if vecs is None else vecs[i - lo])

    def iter_parsed(self, start: int = 0, stop: int | None = None,
                    chunk: int = 4096) -> Iterator[Event]:
        """Validated :class:`Event` objects, fast: each event goes through
        :func:`~pipeline.contracts.events.validate` without its vector, and in mode
        ``"provided"`` the float32 vector is attached directly (what validate would build,
        minus the 5-decimal rounding of the JSON form), skipping a 384-float list per event."""
        stop = len(self) if stop is None else min(stop, len(self))
        for lo in range(start, stop, chunk):
            hi = min(lo + chunk, stop)
            vecs = self.vectors(slice(lo, hi)) if self.mode == "provided" else None
            for i in range(lo, hi):
                ev = validate(self._event(i, None))
                if vecs is not None:
                    ev.embedding = vecs[i - lo]
                yield ev

    def _event(self, i: int, vec: list | None) -> dict:
        s = self.streams[self.tenant[i]]
        att = bool(self.attacking[i])
        cl = s.attack_client if att and s.attack_client is not None else s.client
        text = content.render_text(self.pool.texts[self.rows[i]], int(self.templates[i]))
        f = self.fields
        status = int(f["status"][i])
        ev = {"event_id": f"{self.split[0]}{self.seed}-{i:09d}", "ts": int(self.ts[i]),
              "tenant_id": s.tenant_id, "api_key_id": cl.keys[f["key"][i] % len(cl.keys)],
              "model": cl.model, "endpoint": cl.endpoint, "prompt": text,
              "input_tokens": cl.sys_tokens + math.ceil(len(text) / 4),
              "output_tokens": int(f["output_tokens"][i]) if status == 200 else 0,
              "latency_ms": float(f["latency_ms"][i]), "status": status,
              "client_ip": cl.ips[f["ip"][i] % len(cl.ips)], "user_agent": cl.user_agent}
        if self.account_ages:
            ev["account_created_at"] = int(s.label["account_created_ms"])
        if vec is not None:
            ev["embedding"] = vec
        return ev


class EventList(Sequence):
    """Contract event dicts rendered on access (each access builds a fresh dict)."""

    def __init__(self, traffic: Traffic):
        self._t = traffic

    def __len__(self) -> int:
        return len(self._t)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(self._t.iter_events(*i.indices(len(self))[:2])) if i.step in (None, 1) \
                else [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        vec = None
        if self._t.mode == "provided":
            vec = np.round(self._t.vectors(slice(i, i + 1))[0], 5).tolist()
        return self._t._event(i, vec)

    def __iter__(self):
        return self._t.iter_events()


def family_counts(n_tenants: int, attackers: int | None = None) -> dict[str, int]:
    """Tenants per family (hydra: campaigns) for ``n_tenants`` non-hydra tenants;
    ``attackers``: tenants per attack family other than hydra (default: their share)."""
    n_att = max(MIN_PER_ATTACK, round(ATTACK_SHARE * n_tenants)) if attackers is None \
        else attackers
    counts = {f: n_att for f in ATTACKS if f != "hydra"}
    counts["hydra"] = max(1, round(n_tenants / 250))
    rest = max(len(BENIGN), n_tenants - sum(v for k, v in counts.items() if k != "hydra"))
    for f, share in BENIGN_MIX.items():
        counts[f] = max(2, round(share * rest))
    return counts


def generate(split: str = "report", seed: int = 0, scale: float = 1.0, *,
             mode: str = "provided", tenants: int | None = None, days: float | None = None,
             hydra_accounts: tuple[int, int] = (20, 200),
             account_ages: bool = False, neutral: str | None = None,
             live: bool = False, attackers: int | None = None) -> Traffic:
    """Labelled traffic of ``tenants`` (default ``400 * scale``) over ``days`` (default 7).

    ``hydra_accounts`` bounds the accounts per hydra campaign (one campaign per 250
    tenants, at least one). Deterministic for a given (split, seed, scale, tenants, days).
    ``account_ages``: events carry ``account_created_at`` (off by default: most gateways do
    not know it, and the campaign stage must work without it). ``neutral``: one of
    :data:`~pipeline.simulate.tenants.NEUTRAL`, made uninformative (the robustness runs of
    ``bench detect``): attackers draw it from the benign tenants' distribution. ``live``:
    detection starts on a gateway whose every tenant, attackers included, is already
    active: each tenant's stream is moved earlier, unchanged in shape, so its first query
    falls in the first hour (the independent evaluation's set-up in issue 14).
    ``attackers``: tenants per attack family other than hydra (default: a share of
    ``tenants`` that makes attackers about a fifth of them; 1 is a gateway where attackers
    are rare, so they do not make up much of the population benign tenants are judged by).
    """
    if attackers is not None and attackers < 1:
        raise ValueError("attackers must be >= 1")
    if neutral is not None and neutral not in plans.NEUTRAL:
        raise ValueError(f"neutral must be one of {plans.NEUTRAL}, not {neutral!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    pool = with_strategies(build_pool(split))
    n_tenants = tenants if tenants is not None else max(len(BENIGN) + 6,
                                                        round(DEFAULT_TENANTS * scale))
    days = DEFAULT_DAYS if days is None else days
    rng = np.random.default_rng([seed, SPLIT_SALT[split]])
    start = SIM_START_MS
    ctx = Ctx(pool=pool, rng=rng, start_ms=start, end_ms=start + int(days * DAY_MS),
              neutral=neutral)
    streams: list[TenantStream] = []
    for family, count in family_counts(n_tenants, attackers).items():
        for _ in range(count):
            if family == "hydra":
                lo, hi = hydra_accounts
                streams += plans.hydra(ctx, int(rng.integers(lo, hi + 1)))
            else:
                streams += plans.PLANNERS[family](ctx)
    streams = [s for s in streams if len(s.ts)]
    if live:
        for s in streams:
            at = start + int(rng.uniform(0, 3_600_000))
            if int(s.ts[0]) > at:
                s.ts = s.ts - (int(s.ts[0]) - at)
    for s in streams:
        s.label["account_created_ms"] = _created_ms(rng, ctx, s)
    if neutral == "answer_length":        # every tenant's answers from one distribution
        for s in streams:
            s.client.out_mu, s.client.out_sigma = plans.benign_out_mu(rng), 0.8
            if s.attack_client is not None:
                s.attack_client.out_mu = s.client.out_mu
    traffic = _merge(split, seed, mode, ctx, pool, streams)
    traffic.account_ages = account_ages
    return traffic


def _created_ms(rng: np.random.Generator, ctx: Ctx, s: TenantStream) -> int:
    """An account that sends from the first hours existed before (30-700 days); one that
    starts later, or an attacker's own account, was created shortly before its first query."""
    first = int(s.ts[0])
    own_attack = s.label["is_attack"] and s.label["family"] != "account_takeover"
    if own_attack or first > ctx.start_ms + 6 * 3_600_000:
        return first - int(rng.uniform(60_000, 2 * 3_600_000))
    return ctx.start_ms - int(rng.uniform(30, 700) * DAY_MS)


def _merge(split, seed, mode, ctx: Ctx, pool: Pool, streams: list[TenantStream]) -> Traffic:
    rng = ctx.rng
    sizes = np.asarray([len(s.ts) for s in streams])
    tenant = np.repeat(np.arange(len(streams)), sizes)
    ts = np.concatenate([s.ts for s in streams])
    order = np.argsort(ts, kind="stable")
    attacking = np.concatenate([s.attacking for s in streams])
    out_mu = np.concatenate([np.where(s.attacking & (s.attack_client is not None),
                                      getattr(s.attack_client, "out_mu", 0.0), s.client.out_mu)
                             for s in streams])
    out_sigma = np.repeat([s.client.out_sigma for s in streams], sizes)
    n = len(ts)
    out_tokens = np.clip(rng.lognormal(out_mu, out_sigma), 1, 4096).astype(np.int64)
    latency = 120 + out_tokens * rng.uniform(8, 20, n) + rng.lognormal(4, 1, n)
    status = rng.choice([200, 429, 500, 503], size=n, p=[0.995, 0.003, 0.001, 0.001])
    fields = {"output_tokens": out_tokens[order], "latency_ms": np.round(latency, 1)[order],
              "status": status[order], "key": rng.integers(0, 3, n)[order],
              "ip": rng.integers(0, 6, n)[order]}
    ev_tenant = tenant[order]
    labels = {}
    for k, s in enumerate(streams):
        lab = dict(s.label)
        lab["n_events"] = int(sizes[k])
        lab["active_days"] = int(len(np.unique((s.ts - ctx.start_ms) // DAY_MS)))
        labels[s.tenant_id] = lab
    return Traffic(split=split, seed=seed, mode=mode, start_ms=ctx.start_ms, end_ms=ctx.end_ms,
                   labels=labels, pool=pool, tenant_ids=[s.tenant_id for s in streams],
                   tenant=ev_tenant, ts=ts[order],
                   rows=np.concatenate([s.rows for s in streams])[order],
                   templates=np.concatenate([s.templates for s in streams])[order],
                   attacking=attacking[order], fields=fields, streams=streams)


# ---- live demo source -----------------------------------------------------------------------

DEMO_TENANTS = ("acme-helpdesk", "globex-chat", "initech-codegen", "umbrella-faq",
                "hooli-search", "stark-tutor", "wayne-legal", "wonka-recipes")
DEMO_SWEEPER = "nimbus-labs"


def iter_demo_events(rate_per_s: float = 20.0, *, seed: int = 0, mode: str = "provided",
                     split: str = "report", realtime: bool = True,
                     limit: int | None = None, sweeper_share: float = 0.3) -> Iterator[dict]:
    """Endless contract events stamped with the wall clock, for ``make run``.

    Eight benign tenants (apps with working sets, a chat product, a coding tool) and one
    obvious attacker, ``nimbus-labs``: a broad sweep taking ``sweeper_share`` of the traffic.
    ``realtime=False`` skips the sleeping (tests); ``limit`` stops after that many events.
    """
    pool = build_pool(split)
    rng = np.random.default_rng([seed, 99])
    ctx = Ctx(pool=pool, rng=rng, start_ms=0, end_ms=DAY_MS)
    benign: list[tuple[str, np.ndarray, plans.Client]] = []
    for j, name in enumerate(DEMO_TENANTS):
        if j == 1:
            cats = pool.cats(plans.CHAT_KINDS, min_rows=5)
            pick = [int(c) for c in rng.choice(cats, size=min(20, len(cats)), replace=False)]
            rows = content.broad_mix(rng, pool, pick, rng.dirichlet(np.ones(len(pick))), 50_000)
        elif j == 2:
            rows = content.broad_mix(rng, pool, pool.cats(("code",)),
                                     np.ones(len(pool.cats(("code",)))), 50_000, p_repeat=0.3)
        else:
            rows = content.working_set(rng, pool, plans._app_cats(ctx), 50_000)
        benign.append((name, rows, ctx.client(name, machine=True)))
    sweep = content.Sweep(rng, pool, pool.cats(), content.sqrt_weights(pool, pool.cats()))
    sweeper = ctx.client(DEMO_SWEEPER, machine=True, model="cw-large-2026-02", out_mu=6.0)
    weights = rng.dirichlet(np.full(len(benign), 2.0))
    interval = 1.0 / rate_per_s
    next_at = time.monotonic()
    for i in range(limit if limit is not None else 1 << 62):
        if rng.random() < sweeper_share:
            name, row, cl = DEMO_SWEEPER, int(sweep.take(1)[0]), sweeper
        else:
            j = int(rng.choice(len(benign), p=weights))
            name, rows, cl = benign[j]
            row = int(rows[i % len(rows)])
        text = pool.texts[row]
        out = int(min(4096, rng.lognormal(cl.out_mu, cl.out_sigma)))
        ev = {"event_id": f"demo{seed}-{time.time_ns():x}-{i}", "ts": time.time_ns() // 1_000_000,
              "tenant_id": name, "api_key_id": cl.keys[0], "model": cl.model,
              "endpoint": cl.endpoint, "prompt": text,
              "input_tokens": cl.sys_tokens + math.ceil(len(text) / 4), "output_tokens": out,
              "latency_ms": round(120 + out * float(rng.uniform(8, 20)), 1), "status": 200,
              "client_ip": cl.ips[0], "user_agent": cl.user_agent}
        if mode == "provided":
            ev["embedding"] = np.round(pool.embeddings[row].astype(np.float32), 5).tolist()
        yield ev
        if realtime:
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
