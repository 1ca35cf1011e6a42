"""Tenant behaviours: one planner per family, each returning labelled per-tenant streams.

A planner decides *when* a tenant queries (:mod:`~pipeline.simulate.timing`), *what* it asks
(:mod:`~pipeline.simulate.content`) and how its client looks (keys, IPs, user agent, output
lengths). Benign families are what an API provider really sees, including hard negatives
(batch jobs, benchmark runs) that are systematic but bounded. Attack families follow the
extraction playbooks described in the issue: broad sweeps, capability-targeted chain of
thought, slow-and-low, account takeover, hydra campaigns and an adaptive mimic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.simulate import content, timing
from pipeline.simulate.strategies import RANDOM_CAT, STRATEGY_KIND, WIKI_CAT, farthest_first
from pipeline.simulate.timing import DAY_MS

BENIGN = ("focused_app", "general_chat", "chat_product", "coding_assistant", "feature_add",
          "batch_job", "benchmark_run")
HARD_NEGATIVES = ("batch_job", "benchmark_run")
ATTACKS = ("broad_sweep", "capability_targeted", "slow_and_low", "account_takeover", "hydra",
           "adaptive", "random_words", "wiki_sentences", "meaeq")
FAMILIES = BENIGN + ATTACKS
# Signals an attacker sets alone, each of which a robustness run makes uninformative (the
# same distribution for attackers and benign tenants): answer length, client fingerprint,
# pace and chain-of-thought wording. No rule may depend on one of them alone (issue 14).
NEUTRAL = ("answer_length", "client", "pace", "cot_wording")

USER_AGENTS = ("openai-python/1.68.2", "anthropic-sdk-python/0.49.0", "langchain/0.3.21",
               "node-fetch/3.3.2", "curl/8.5.0", "python-requests/2.32.3", "Go-http-client/2.0",
               "aiohttp/3.11.14", "Mozilla/5.0 (X11; Linux x86_64) webapp/2.4")
MODELS = ("cw-large-2026-02", "cw-small-2026-02", "cw-code-2026-01")
CHAT_KINDS = ("chat", "nlp", "exam", "code", "math", "reasoning", "ai_eval")


@dataclass
class Client:
    """How a tenant's requests look on the wire, apart from the prompt."""

    keys: list[str]
    ips: list[str]
    user_agent: str
    model: str
    endpoint: str = "/v1/chat/completions"
    out_mu: float = 5.3          # log of median output tokens
    out_sigma: float = 0.8
    sys_tokens: int = 40         # system prompt and chat framing added to every request


@dataclass
class TenantStream:
    tenant_id: str
    ts: np.ndarray               # int64 epoch ms, sorted
    rows: np.ndarray             # pool row per query
    templates: np.ndarray        # template id per query (-1: raw prompt)
    attacking: np.ndarray        # bool per query
    client: Client
    label: dict
    attack_client: Client | None = None


@dataclass
class Ctx:
    """Shared inputs of every planner: the pool, the simulated window, the generator."""

    pool: object
    rng: np.random.Generator
    start_ms: int
    end_ms: int
    ids: set = field(default_factory=set)
    # a signal the attacker controls alone, made uninformative (see NEUTRAL), or None
    neutral: str | None = None

    def attack_times(self, per_day: float, start: int, end: int) -> np.ndarray:
        """An attacker's arrivals: a script's steady stream, or (neutral "pace") a human's."""
        if self.neutral == "pace":
            return timing.human_times(self.rng, per_day, start, end,
                                      tz_hours=int(self.rng.integers(-8, 10)))
        return timing.machine_times(self.rng, per_day, start, end)

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / DAY_MS

    def tenant_id(self) -> str:
        while True:
            tid = f"t-{int(self.rng.integers(16 ** 8)):08x}"
            if tid not in self.ids:
                self.ids.add(tid)
                return tid

    def client(self, tenant_id: str, *, machine: bool, nets: list[str] | None = None,
               user_agent: str | None = None, **kw) -> Client:
        """Keys, addresses (in the tenant's own /24 networks, or ``nets``), user agent."""
        r = self.rng
        keys = [f"{tenant_id}-k{j}" for j in range(int(r.integers(1, 4)))]
        nets = nets or [_net(r) for _ in range(int(r.integers(1, 3)))]
        ips = [_ip(r, nets) for _ in range(int(r.integers(1, 3 if machine else 6)))]
        ua = user_agent or USER_AGENTS[int(r.integers(0, 6 if machine else len(USER_AGENTS)))]
        model = kw.pop("model", MODELS[int(r.choice(3, p=[0.6, 0.3, 0.1]))])
        return Client(keys=keys, ips=ips, user_agent=ua, model=model,
                      sys_tokens=int(r.integers(10, 300)), **kw)

    def window(self, late_start: float = 0.2, max_frac: float = 0.7) -> tuple[int, int]:
        """Most tenants exist all along; ``late_start`` of them sign up during the window."""
        span = self.end_ms - self.start_ms
        start = self.start_ms
        if self.rng.random() < late_start:
            start += int(self.rng.uniform(0, max_frac) * span)
        return start, self.end_ms


def _net(rng: np.random.Generator) -> str:
    """A /24 of a tenant's own (synthetic text in logs; never contacted)."""
    return f"{int(rng.integers(11, 224))}.{int(rng.integers(256))}.{int(rng.integers(256))}"


def _ip(rng: np.random.Generator, nets: list[str] | None = None) -> str:
    nets = nets or [_net(rng)]
    return f"{nets[int(rng.integers(len(nets)))]}.{int(rng.integers(1, 255))}"


def _label(family: str, attack_start: int | None = None, campaign: str | None = None) -> dict:
    return {"family": family, "is_attack": family in ATTACKS,
            "hard_negative": family in HARD_NEGATIVES,
            "attack_start_index": attack_start, "campaign_id": campaign}


def _stream(ctx: Ctx, tid: str, family: str, ts, rows, client: Client, *, templates=None,
            attacking: bool = False, campaign: str | None = None) -> TenantStream:
    n = len(ts)
    tmpl = np.full(n, -1, np.int16) if templates is None else np.asarray(templates, np.int16)
    return TenantStream(tid, np.asarray(ts, np.int64), np.asarray(rows, np.int64), tmpl,
                        np.full(n, attacking), client,
                        _label(family, 0 if attacking else None, campaign))


def _app_cats(ctx: Ctx, kinds=CHAT_KINDS, k_max: int = 3) -> list[int]:
    """1-3 topics of one source, as an app built around one kind of task would use."""
    pool, r = ctx.pool, ctx.rng
    cats = pool.cats(kinds, min_rows=15)
    source = pool.cat_source[cats[int(r.integers(len(cats)))]]
    same = [c for c in cats if pool.cat_source[c] == source]
    k = min(len(same), int(r.integers(1, k_max + 1)))
    return [int(c) for c in r.choice(same, size=k, replace=False)]


def _human_ts(ctx: Ctx, per_day: float, late_start: float = 0.2,
              max_frac: float = 0.7) -> np.ndarray:
    start, end = ctx.window(late_start, max_frac)
    return timing.human_times(ctx.rng, per_day, start, end, tz_hours=int(ctx.rng.integers(-8, 10)))


def benign_out_mu(rng: np.random.Generator) -> float:
    """Log median answer length of a tenant drawn from the benign tenants' spread: an
    attacker chooses its answer length (concise answers, a classifier's labels), so the
    simulated attackers draw theirs from the same distribution as benign tenants."""
    return float(rng.normal(5.3, 0.45))


# ---- benign --------------------------------------------------------------------------------

def focused_app(ctx: Ctx) -> list[TenantStream]:
    r = ctx.rng
    tid = ctx.tenant_id()
    ts = _human_ts(ctx, r.lognormal(np.log(150), 1.0))
    rows = content.working_set(r, ctx.pool, _app_cats(ctx), len(ts),
                               p_new=r.uniform(0.05, 0.2), initial=int(r.lognormal(5, 0.6)))
    cl = ctx.client(tid, machine=True, out_mu=r.normal(5.2, 0.4))
    return [_stream(ctx, tid, "focused_app", ts, rows, cl)]


def general_chat(ctx: Ctx) -> list[TenantStream]:
    r, pool = ctx.rng, ctx.pool
    tid = ctx.tenant_id()
    ts = _human_ts(ctx, r.lognormal(np.log(60), 0.8))
    cats = pool.cats(CHAT_KINDS, min_rows=5)
    kind_w = {"chat": 4.0, "nlp": 1.0, "exam": 1.0, "code": 1.5, "math": 1.0, "reasoning": 1.0,
              "ai_eval": 0.3}
    k = min(len(cats), int(r.integers(8, 40)))
    pw = np.asarray([kind_w[pool.cat_kind[c]] for c in cats])
    chosen = [int(c) for c in r.choice(cats, size=k, replace=False, p=pw / pw.sum())]
    rows = content.broad_mix(r, pool, chosen, r.dirichlet(np.full(k, 0.5)), len(ts),
                             p_repeat=r.uniform(0.05, 0.25))
    cl = ctx.client(tid, machine=False, out_mu=r.normal(5.6, 0.3))
    return [_stream(ctx, tid, "general_chat", ts, rows, cl)]


def chat_product(ctx: Ctx) -> list[TenantStream]:
    """A general-chat product relaying many human users: busy, broad (most chat topics),
    rarely re-asking, ordinary answers. Half run before coverwatch starts; the others sign
    up one by one over the first day and a half (what a gateway with customers looks like)."""
    r, pool = ctx.rng, ctx.pool
    tid = ctx.tenant_id()
    late = r.random() < 0.5
    span = ctx.end_ms - ctx.start_ms
    ts = _human_ts(ctx, r.lognormal(np.log(500), 0.7), late_start=1.0 if late else 0.0,
                   max_frac=min(0.7, 1.5 * DAY_MS / span))
    cats = pool.cats(CHAT_KINDS, min_rows=5)
    k = min(len(cats), int(r.integers(25, 80)))
    chosen = [int(c) for c in r.choice(cats, size=k, replace=False)]
    rows = content.broad_mix(r, pool, chosen, r.dirichlet(np.full(k, 1.0)), len(ts),
                             p_repeat=r.uniform(0.01, 0.08))
    cl = ctx.client(tid, machine=False, out_mu=r.normal(5.5, 0.3))
    return [_stream(ctx, tid, "chat_product", ts, rows, cl)]


def coding_assistant(ctx: Ctx) -> list[TenantStream]:
    r, pool = ctx.rng, ctx.pool
    tid = ctx.tenant_id()
    ts = _human_ts(ctx, r.lognormal(np.log(120), 0.8))
    code = pool.cats(("code",), min_rows=5)
    chat = pool.cats(("chat",), min_rows=5)
    extra = [int(c) for c in r.choice(chat, size=min(3, len(chat)), replace=False)]
    cats = code + extra
    w = np.r_[np.full(len(code), 0.85 / len(code)), np.full(len(extra), 0.15 / len(extra))]
    rows = content.broad_mix(r, pool, cats, w, len(ts), p_repeat=r.uniform(0.2, 0.4))
    cl = ctx.client(tid, machine=True, model="cw-code-2026-01", out_mu=r.normal(5.8, 0.3))
    return [_stream(ctx, tid, "coding_assistant", ts, rows, cl)]


def feature_add(ctx: Ctx) -> list[TenantStream]:
    """An app that ships a feature: 1-2 new topics take 30-50% of traffic, then settle."""
    r, pool = ctx.rng, ctx.pool
    tid = ctx.tenant_id()
    start, end = ctx.window(late_start=0.0)
    ts = timing.human_times(r, r.lognormal(np.log(200), 0.7), start, end,
                            tz_hours=int(r.integers(-8, 10)))
    old = content.working_set(r, pool, _app_cats(ctx), len(ts), p_new=0.1)
    new = content.working_set(r, pool, _app_cats(ctx, k_max=2), len(ts), p_new=0.15,
                              initial=int(r.integers(30, 200)))
    launch = start + int(r.uniform(0.25, 0.6) * (end - start))
    share = r.uniform(0.3, 0.5)
    use_new = (ts >= launch) & (r.random(len(ts)) < share)
    rows = np.where(use_new, new, old)
    cl = ctx.client(tid, machine=True, out_mu=r.normal(5.2, 0.4))
    return [_stream(ctx, tid, "feature_add", ts, rows, cl)]


def batch_job(ctx: Ctx) -> list[TenantStream]:
    """One pass over a dataset (labelling, summarising, a red-team eval), then stop."""
    r, pool = ctx.rng, ctx.pool
    tid = ctx.tenant_id()
    cats = _app_cats(ctx, kinds=("nlp", "ai_eval", "adversarial", "chat"), k_max=4)
    rows = np.concatenate([pool.cat_rows[c] for c in cats])[: int(r.integers(300, 3000))]
    start = ctx.start_ms + int(r.uniform(0, 0.8) * (ctx.end_ms - ctx.start_ms))
    ts = timing.paced_times(r, len(rows), r.uniform(0.3, 4.0), start)
    keep = ts < ctx.end_ms
    cl = ctx.client(tid, machine=True, out_mu=r.normal(4.3, 0.5))
    cl.endpoint = "/v1/batch"
    return [_stream(ctx, tid, "batch_job", ts[keep], rows[keep], cl)]


def benchmark_run(ctx: Ctx) -> list[TenantStream]:
    """An eval harness: one pass over a benchmark's tasks, re-run 1-3 times on later days."""
    r, pool = ctx.rng, ctx.pool
    tid = ctx.tenant_id()
    kinds = ("exam", "math", "code", "reasoning", "chat")
    source = r.choice(pool.sources_of(kinds))
    cats = [c for c in pool.cats(kinds) if pool.cat_source[c] == source]
    take = r.choice(cats, size=min(len(cats), int(r.integers(3, 60))), replace=False)
    per_cat = int(r.integers(20, 120))
    rows = np.concatenate([pool.cat_rows[c][:per_cat] for c in take])[:2500]
    runs = int(r.integers(1, 4))
    first = ctx.start_ms + int(r.uniform(0, 0.6) * (ctx.end_ms - ctx.start_ms))
    rate = r.uniform(1.0, 8.0)
    ts = np.concatenate([timing.paced_times(r, len(rows), rate, first + k * DAY_MS)
                         for k in range(runs)])
    all_rows = np.tile(rows, runs)
    keep = ts < ctx.end_ms
    cl = ctx.client(tid, machine=True, out_mu=r.normal(4.5, 0.6))
    return [_stream(ctx, tid, "benchmark_run", ts[keep], all_rows[keep], cl)]


# ---- attacks -------------------------------------------------------------------------------

def _attack_window(ctx: Ctx, latest: float = 0.5) -> tuple[int, int]:
    start = ctx.start_ms + int(ctx.rng.uniform(0, latest) * (ctx.end_ms - ctx.start_ms))
    return start, ctx.end_ms


def _sweep(ctx: Ctx, block: bool | None = None) -> content.Sweep:
    pool, r = ctx.pool, ctx.rng
    cats = pool.cats(exclude_kinds=(STRATEGY_KIND,))
    block_mean = 0
    if block if block is not None else r.random() < 0.3:
        block_mean = int(r.integers(20, 100))
    return content.Sweep(r, pool, cats, content.sqrt_weights(pool, cats), block_mean)


def broad_sweep(ctx: Ctx) -> list[TenantStream]:
    r = ctx.rng
    tid = ctx.tenant_id()
    ts = ctx.attack_times(r.lognormal(np.log(3000), 0.5), *_attack_window(ctx))
    rows = _sweep(ctx).take(len(ts))
    cl = ctx.client(tid, machine=True, model="cw-large-2026-02", out_mu=benign_out_mu(r))
    return [_stream(ctx, tid, "broad_sweep", ts, rows, cl, attacking=True)]


def capability_targeted(ctx: Ctx) -> list[TenantStream]:
    r, pool = ctx.rng, ctx.pool
    tid = ctx.tenant_id()
    caps = [k for k in ("math", "reasoning", "code", "exam") if pool.cats((k,), min_rows=50)]
    cap = caps[int(r.integers(len(caps)))]
    cats = pool.cats((cap,))
    ts = ctx.attack_times(r.lognormal(np.log(1500), 0.5), *_attack_window(ctx))
    rows = content.Sweep(r, pool, cats, content.sqrt_weights(pool, cats)).take(len(ts))
    tmpl = r.choice(content.CAPABILITY_TEMPLATES[cap], size=len(ts))
    if ctx.neutral == "cot_wording":      # the same questions, without asking for reasoning
        tmpl = np.full(len(ts), -1)
    cl = ctx.client(tid, machine=True, model="cw-large-2026-02", out_mu=r.normal(7.1, 0.2),
                    out_sigma=0.35)
    s = _stream(ctx, tid, "capability_targeted", ts, rows, cl, templates=tmpl, attacking=True)
    s.label["capability"] = cap
    return [s]


def slow_and_low(ctx: Ctx) -> list[TenantStream]:
    r = ctx.rng
    tid = ctx.tenant_id()
    start, end = _attack_window(ctx, latest=0.15)
    ts = ctx.attack_times(r.uniform(40, 150), start, end)
    rows = _sweep(ctx).take(len(ts))
    cl = ctx.client(tid, machine=True, model="cw-large-2026-02", out_mu=benign_out_mu(r))
    return [_stream(ctx, tid, "slow_and_low", ts, rows, cl, attacking=True)]


def account_takeover(ctx: Ctx, own_client: float = 0.5) -> list[TenantStream]:
    """A benign app keeps running; a stolen key adds a sweep at 10-50% of traffic. With
    probability 1 - ``own_client`` the thief goes through the victim's own client (its app,
    its keys, its address): only the *content* of the tenant's traffic moves."""
    r = ctx.rng
    base = (focused_app if r.random() < 0.6 else coding_assistant)(ctx)[0]
    start = base.ts[0] if len(base.ts) else ctx.start_ms
    t0 = start + int(r.uniform(0.3, 0.6) * (ctx.end_ms - start))
    share = r.uniform(0.1, 0.5)
    after = int(np.sum(base.ts >= t0))
    n_att = max(20, int(round(after * share / (1 - share))))
    ts = np.sort(r.integers(t0, ctx.end_ms, n_att))
    if ctx.neutral == "pace":             # the thief follows the victim's own rhythm
        ts = np.sort(r.choice(base.ts[base.ts >= t0], n_att)) if after else ts
    if ctx.neutral == "client":
        own_client = 0.0
    rows = _sweep(ctx).take(n_att)
    order = np.argsort(np.r_[base.ts, ts], kind="stable")
    attacking = np.r_[np.zeros(len(base.ts), bool), np.ones(n_att, bool)][order]
    own = r.random() < own_client
    thief = Client(keys=base.client.keys[:1], ips=[_ip(r)], user_agent="python-requests/2.32.3",
                   model="cw-large-2026-02", out_mu=benign_out_mu(r), sys_tokens=0) if own \
        else None
    s = TenantStream(
        base.tenant_id, np.r_[base.ts, ts][order], np.r_[base.rows, rows][order],
        np.r_[base.templates, np.full(n_att, -1, np.int16)][order], attacking, base.client,
        _label("account_takeover", int(np.argmax(attacking))), attack_client=thief)
    s.label["attack_share"] = round(float(share), 3)
    s.label["victim_client"] = not own
    return [s]


def hydra(ctx: Ctx, accounts: int | None = None) -> list[TenantStream]:
    """One sweep split over many fresh accounts of 100-300 queries each, staggered in time."""
    r = ctx.rng
    n_acc = accounts or int(r.integers(20, 201))
    campaign = f"c-{int(r.integers(16 ** 6)):06x}"
    sweep = _sweep(ctx, block=False)
    # one operator: a few proxy networks and one HTTP client for every account
    nets = [_net(r) for _ in range(int(r.integers(2, 6)))]
    ua = USER_AGENTS[int(r.integers(0, 6))]
    out = []
    for _ in range(n_acc):
        tid = ctx.tenant_id()
        n = int(r.integers(100, 301))
        start = ctx.start_ms + int(r.uniform(0, 0.9) * (ctx.end_ms - ctx.start_ms))
        ts = timing.paced_times(r, n, r.uniform(0.005, 0.05), start)   # one every 20-200 s
        if ctx.neutral == "pace":
            # a human's arrivals at a focused app's rate, for the same n queries: the pace
            # changes, the account's budget does not (drawn over the machine-paced span, a
            # few hours, most members sent 4-49 queries and a third none)
            ts = ctx.attack_times(r.lognormal(np.log(150), 1.0), start, ctx.end_ms)[:n]
        ts = ts[ts < ctx.end_ms]
        cl = ctx.client(tid, machine=True, model="cw-large-2026-02", out_mu=benign_out_mu(r),
                        nets=nets, user_agent=ua)
        out.append(_stream(ctx, tid, "hydra", ts, sweep.take(len(ts)), cl, attacking=True,
                           campaign=campaign))
    return out


def adaptive(ctx: Ctx) -> list[TenantStream]:
    """Sweeps new prompts but with a chat user's topic mix (re-drawn each day) and timing."""
    r, pool = ctx.rng, ctx.pool
    tid = ctx.tenant_id()
    start, end = _attack_window(ctx, latest=0.3)
    ts = timing.human_times(r, r.lognormal(np.log(400), 0.4), start, end,
                            tz_hours=int(r.integers(-8, 10)))
    cats = pool.cats(CHAT_KINDS, min_rows=5)
    sweep = content.Sweep(r, pool, cats)
    rows = np.empty(len(ts), np.int64)
    day = (ts - start) // DAY_MS
    for d in np.unique(day):
        w = np.zeros(len(cats))
        k = min(len(cats), int(r.integers(8, 40)))
        w[r.choice(len(cats), size=k, replace=False)] = r.dirichlet(np.full(k, 0.5))
        sweep.set_weights(w + 1e-9)
        m = day == d
        rows[m] = sweep.take(int(m.sum()))
    cl = ctx.client(tid, machine=False, out_mu=benign_out_mu(r))
    return [_stream(ctx, tid, "adaptive", ts, rows, cl, attacking=True)]


def _strategy_stream(ctx: Ctx, family: str, rows_of) -> list[TenantStream]:
    r = ctx.rng
    tid = ctx.tenant_id()
    ts = ctx.attack_times(r.lognormal(np.log(1500), 0.6), *_attack_window(ctx))
    cl = ctx.client(tid, machine=True, model="cw-large-2026-02", out_mu=benign_out_mu(r))
    return [_stream(ctx, tid, family, ts, rows_of(len(ts)), cl, attacking=True)]


def _strategy_rows(ctx: Ctx, category: str):
    """Rows of one strategy category without replacement (a plain sweep when the pool has
    none, e.g. the stand-in, whose texts are not sentences)."""
    cats = [c for c, name in enumerate(ctx.pool.cat_names) if name == category]
    sweep = content.Sweep(ctx.rng, ctx.pool, cats) if cats else _sweep(ctx)
    return sweep.take


def random_words(ctx: Ctx) -> list[TenantStream]:
    """Krishna et al. 2020, RANDOM: word sequences from a vocabulary, never re-asked."""
    return _strategy_stream(ctx, "random_words", _strategy_rows(ctx, RANDOM_CAT))


def wiki_sentences(ctx: Ctx) -> list[TenantStream]:
    """Krishna et al. 2020, WIKI: natural sentences sampled from a public corpus."""
    return _strategy_stream(ctx, "wiki_sentences", _strategy_rows(ctx, WIKI_CAT))


def meaeq(ctx: Ctx) -> list[TenantStream]:
    """MeaeQ (Xu et al. 2023): the victim's task (one kind of prompt) queried with the most
    diverse selection from a public pool: farthest-point order over that task's prompts."""
    r, pool = ctx.rng, ctx.pool
    kinds = [k for k in ("exam", "math", "code", "chat", "ai_eval", "nlp")
             if sum(len(pool.cat_rows[c]) for c in pool.cats((k,))) >= 500]
    kind = kinds[int(r.integers(len(kinds)))] if kinds else None
    cats = pool.cats((kind,)) if kind else pool.cats(exclude_kinds=(STRATEGY_KIND,))
    cand = r.permutation(np.concatenate([pool.cat_rows[c] for c in cats]))

    def rows_of(n: int) -> np.ndarray:
        # farthest-point order within chunks of 2,000 candidates, 1,000 picked from each
        # (quadratic cost stays bounded); past the pool, a second pass in the same order
        picked = [c[farthest_first(pool.embeddings[c], min(1000, len(c)), r)]
                  for c in (cand[i:i + 2000] for i in range(0, min(len(cand), 2 * n), 2000))]
        return np.resize(np.concatenate(picked), n)

    out = _strategy_stream(ctx, "meaeq", rows_of)
    out[0].label["task_kind"] = kind
    return out


PLANNERS = {f.__name__: f for f in (focused_app, general_chat, chat_product, coding_assistant,
                                    feature_add, batch_job, benchmark_run, broad_sweep,
                                    capability_targeted, slow_and_low, account_takeover, hydra,
                                    adaptive, random_words, wiki_sentences, meaeq)}
