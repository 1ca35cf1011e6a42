"""The global campaign stage: groups of small accounts that together behave like one sweep.

:class:`CampaignStage` consumes the account summaries of
:class:`~pipeline.campaigns.sketch.AccountSketcher` (a few per account, so it scales with
accounts, not events) and raises **one alert per campaign**: ``detector="campaign"``,
``tenant_id`` = the campaign's first member (its lead, stable), ``related_tenants`` = every
other member found so far. When members are added the alert is re-emitted under the same
``alert_id``, so downstream de-duplication keeps the newest version.

How a campaign is found (no labels; population baselines learned online):

1. **Sweep-like new accounts.** Per query-count bucket (50, 100, 200, 400, ... queries) the
   stage keeps histograms of every account's breadth (distinct cells / queries) and region
   coverage. An account is a *candidate* while it is young (at most ``young_queries``
   queries), rarely repeats a prompt (``max_repeat``), and its breadth and coverage are
   both at or above the ``candidate_quantile`` of accounts at the same count (and
   breadth >= ``min_breadth``). It is *new* when created at most ``new_account_ms``
   before its summary and the events carry ``account_created_at``; without it, when first
   seen at least ``established_after_ms`` after the stage's first summary: a worker that
   starts on a gateway with customers sees every one of them "for the first time" in its
   first hours, and they are established accounts, not a campaign's fresh ones. An
   established account is still a candidate, but meets others only on one machine room
   (below), and a campaign of them is not called new: a hydra already running when the
   worker starts is still one operation (report split, text mode: 73 -> 92 of 97 hydra
   members named with the per-tenant rules, no benign tenant more).
   Nothing is a candidate until its bucket has ``warmup`` summaries. Once a campaign is
   confirmed, a young, broad (``min_breadth``), rarely re-asking account may join it
   without the rank (never open a group), on the same keys and profile checks: members of
   a campaign that dominates its own population are still named. So may
   an account still under 50 queries, from its *early* summary (the sketcher's, 6 hours
   after its first query, at 20 or more: members arriving at a human pace), on breadth
   alone; an early summary never opens a group, is never a candidate and does not teach
   the baselines.
2. **Candidate groups without O(n^2), on evidence of one operation.** A candidate is looked
   up in a few band keys: its infrastructure (user agent + IP prefix) and each prompt
   skeleton it re-uses (one query source and style); an established account only in the
   first, and only with an address prefix (independent products share popular templates
   and SDKs, rarely an address block as well). Sharing a model and endpoint is no
   such evidence (every customer of a model does), so it is a condition, not a key: many
   independent broad products that signed up around the same time never meet unless they
   share infrastructure or templates. Only groups filed under one of its keys are compared, at most
   ``max_open`` per key. It joins the largest group that (a) has a member that started
   within ``max_gap_ms`` of it (chained starts), (b) has a similar per-account profile
   (pace within ``rate_tol``, 16x: a wide bound, since the attacker sets its pace), and (c) overlaps it little: mean MinHash Jaccard with the group's recent members
   at most ``max_jaccard`` (complementary coverage; accounts sharing a popular topic
   overlap heavily and never group). Otherwise it opens a new group.
3. **The campaign test.** A group of at least ``min_members`` whose members together reached
   at least ``min_ratio`` times the distinct cells as many typical accounts (population
   median breadth) of the same sizes reach is a campaign; its MinHash union is reported; from then on every joining account is named at once
   (typically at its first summary, after 50 queries). A group is compared with the
   accounts outside it: its members' own summaries are taken out of the baseline first.
4. **Judged again as the baseline grows.** A worker started while a hydra runs meets its
   machine-paced members before human-paced customers reach 50 queries: at first the
   hydra *is* the typical account. Summaries that were not candidates (but young, broad
   and rarely re-asking) are kept (``max_pending``, checkpointed) and, with every
   unalerted group, judged again when a bucket's baseline reaches 160, 320, ... summaries
   (:data:`RETEST_AT`; report split, text, every tenant active from the first hour: 78 ->
   279 of 293 hydra members named, no benign tenant more).

One tenant with many API keys is one account here (sketches are per tenant), so a large
customer's keys never form a group; accounts over ``young_queries`` queries never join
one.

>>> import numpy as np
>>> from pipeline.campaigns.sketch import AccountSketcher
>>> from pipeline.contracts.events import Event
>>> from pipeline.detect.base import Scored
>>> rng = np.random.default_rng(0)
>>> sk, st = AccountSketcher(seed=3), CampaignStage(warmup=20, min_members=3, seed=3)
>>> t0, evs, cells = 1767225600000, [], []
>>> for j in range(40):     # apps re-asking around their own few topics, from the start
...     topic = rng.integers(1, 4000, 8)
...     for i in range(200):
...         evs.append(Event(f"a{j}-{i}", t0 + 600_000 * i, f"app{j}"))
...         cells.append(int(rng.choice(topic)))
>>> sweep = rng.permutation(np.arange(1, 4097))      # one sweep split over 6 new accounts
>>> for j in range(6):     # on one operator's machines, after the first day
...     for i in range(100):
...         evs.append(Event(f"h{j}-{i}", t0 + 3_600_000 * (30 + j) + 30_000 * i, f"h{j}",
...                          model="big", endpoint="/chat", user_agent="python-requests/2.32",
...                          client_ip=f"198.51.100.{j + 1}"))
...         cells.append(int(sweep[100 * j + i]))
>>> order = np.argsort([e.ts_ms for e in evs], kind="stable")
>>> sk.observe_batch([evs[i] for i in order], [Scored(cell=cells[i]) for i in order])
>>> alerts = [a for s in sk.drain() for a in st.update(s)]
>>> len({a.alert_id for a in alerts}), alerts[-1].tenant_id, alerts[-1].related_tenants
(1, 'h0', ['h1', 'h2', 'h3', 'h4', 'h5'])
>>> alerts[-1].detector, alerts[-1].evidence["member_count"]
('campaign', 6)
"""
from __future__ import annotations

import math
import pickle
from collections import Counter, OrderedDict, deque

import numpy as np

from pipeline.campaigns.sketch import CHECKPOINTS, minhash_distinct
from pipeline.contracts.alerts import Alert

N_BUCKETS = 10
_BREADTH_BINS = 50
_REGION_BINS = 65
_TOKEN_BINS = 64
_LOG_MAX_TOKENS = math.log(8192.0)
HOUR_MS = 3_600_000
# Baseline sizes (summaries in one query-count bucket) at which deferred summaries and
# unalerted groups are judged again (CampaignStage._retest). From 160, not the warmup: a
# reseller's chat products behind one address, signing up over a day, met a baseline of 40
# at the hour their group was tested and were called a campaign (session 18).
RETEST_AT = frozenset(160 * 2 ** k for k in range(7))
_LAST_RETEST = max(RETEST_AT)
# summary fields the stage reads (a deferred summary keeps only these)
_KEPT = ("account", "queries", "ts_ms", "first_ts_ms", "with_cells", "distinct_cells",
         "regions", "exact_repeat", "model", "endpoint", "user_agent", "ip_prefixes",
         "skeletons", "gap_log10_mean", "out_tokens_log", "account_created_ms")


def bucket_of(queries: int) -> int:
    """Query-count bucket: 0 for < 100, 1 for < 200, 2 for < 400, ..."""
    return max(0, min(N_BUCKETS - 1, int(math.log2(max(queries, 1) / 50.0)))) if queries >= 50 \
        else 0


class _Baseline:
    """Histograms of breadth, region coverage and answer length per query-count bucket
    (no labels)."""

    __slots__ = ("breadth", "regions", "tokens", "n")

    def __init__(self):
        self.breadth = np.zeros((N_BUCKETS, _BREADTH_BINS), np.float64)
        self.regions = np.zeros((N_BUCKETS, _REGION_BINS), np.float64)
        self.tokens = np.zeros((N_BUCKETS, _TOKEN_BINS), np.float64)
        self.n = np.zeros(N_BUCKETS, np.float64)

    def learn(self, b: int, breadth: float, regions: int, tokens_log: float | None) -> None:
        self.breadth[b, min(int(breadth * _BREADTH_BINS), _BREADTH_BINS - 1)] += 1
        self.regions[b, min(max(regions, 0), _REGION_BINS - 1)] += 1
        if tokens_log is not None:
            self.tokens[b, _token_bin(tokens_log)] += 1
        self.n[b] += 1
        if self.n[b] > 50_000:             # slow forgetting: halve old counts
            self.breadth[b] *= 0.5
            self.regions[b] *= 0.5
            self.tokens[b] *= 0.5
            self.n[b] *= 0.5

    @staticmethod
    def _q(hist: np.ndarray, q: float, width: float) -> float:
        c = np.cumsum(hist)
        if c[-1] <= 0:
            return math.nan
        return float(np.searchsorted(c, q * c[-1])) * width

    def breadth_q(self, b: int, q: float) -> float:
        return self._q(self.breadth[b], q, 1.0 / _BREADTH_BINS)

    def regions_q(self, b: int, q: float) -> float:
        return self._q(self.regions[b], q, 1.0)

    def tokens_q(self, q: float) -> float:
        """Quantile of accounts' mean log output tokens (all query counts together)."""
        return self._q(self.tokens.sum(axis=0), q, _LOG_MAX_TOKENS / _TOKEN_BINS)


def _token_bin(tokens_log: float) -> int:
    return min(max(int(tokens_log / _LOG_MAX_TOKENS * _TOKEN_BINS), 0), _TOKEN_BINS - 1)


class _Group:
    """A candidate group (campaign once it passes the test)."""

    __slots__ = ("gid", "lead", "members", "first_start", "last_start", "last_ts", "union",
                 "recent", "rate", "tok", "model", "endpoint", "uas", "prefixes", "skels",
                 "new", "alerted", "keys", "n_members", "opened", "names", "med")

    def __init__(self, gid: int, s: dict, mh: np.ndarray, keys: list):
        self.gid = gid
        self.lead = s["account"]
        # account -> (queries, distinct cells, regions, log pace, log output tokens)
        self.members: dict[str, tuple] = {}
        self.first_start = self.last_start = self.opened = s["first_ts_ms"]
        self.last_ts = s["ts_ms"]
        self.union = mh.copy()
        self.recent = np.zeros((0, len(mh)), np.uint32)   # last 8 members' MinHashes
        self.rate = self.tok = 0.0
        self.model, self.endpoint = s.get("model") or 0, s.get("endpoint") or 0
        self.uas: Counter = Counter()
        self.prefixes: Counter = Counter()
        self.skels: Counter = Counter()
        self.new = 0
        self.alerted = False
        self.keys = keys
        self.n_members = 0
        self.names: list[str] = []          # members consistent with the group profile
        self.med: tuple = (None, None)      # group median pace and output length


def _log_rate(s: dict) -> float | None:
    """Mean log10 inter-arrival seconds (the account's pace)."""
    return s.get("gap_log10_mean")


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


class CampaignStage:
    """Finds coordinated campaigns in account summaries; one alert per campaign.

    Parameters
    ----------
    min_members
        Accounts a group needs before it can be a campaign.
    min_ratio
        Distinct cells the members reached (summed) / what as many typical accounts
        (population median breadth at each member's query count) reach.
    max_jaccard
        Largest mean MinHash Jaccard between a joining account and the group's recent members.
    max_gap_ms
        A joining account must start within this long of a member's start.
    candidate_quantile
        Population quantile (same query-count bucket) breadth and coverage must reach.
    min_breadth
        Absolute floor on distinct cells / queries for a candidate.
    young_queries
        Accounts with more queries never join a group (established accounts).
    rate_tol, tok_tol
        Largest distance from the group mean of the mean log10 inter-arrival seconds, and of
        the mean log output tokens (None, the default: the attacker picks its answer length
        per account, so it is no evidence either way). The attacker sets its pace too, so
        ``rate_tol`` is wide (16x), a sanity bound rather than evidence of one operator: at
        0.6 (4x) a hydra whose accounts arrive like humans (``bench detect``, pace
        uninformative, provided) lost 13 of 137 members named; without it, two benchmark
        runs of one source were grouped (as generated, 0 at 1.2).
    max_repeat
        Largest share of exactly repeated prompts for a candidate (sweeps never re-ask).
    warmup
        Summaries a query-count bucket needs before its accounts can be candidates.
    established_after_ms
        Without ``account_created_at``, an account first seen less than this long after the
        stage's first summary is established (it meets others only on user agent and
        address prefix together, and a campaign of them is not called new).
    new_account_ms
        With ``account_created_at``, an account created at most this long before its
        summary is new.
    max_open
        Groups remembered per band key (oldest forgotten first).
    max_groups
        Groups remembered in all (unalerted first, oldest first, are forgotten).
    max_listed
        Members listed in an alert (the count keeps growing beyond).
    min_tokens_quantile
        A group whose members' median answer length (mean log output tokens) is below this
        population quantile of accounts is not a campaign. Off (None) by default: the
        attacker chooses its answer length, so it must not decide whether a campaign is
        seen (issue 14).
    seed
        The sketcher's MinHash seed; summaries with another seed are rejected.
    """

    detector = "campaign"

    def __init__(self, min_members: int = 4, min_ratio: float = 1.15, max_jaccard: float = 0.15,
                 max_gap_ms: int = 36 * HOUR_MS, candidate_quantile: float = 0.7,
                 min_breadth: float = 0.8, young_queries: int = 1200, rate_tol: float = 1.2,
                 max_repeat: float = 0.05,
                 tok_tol: float | None = None, warmup: int = 20, established_after_ms: int = 24 * HOUR_MS,
                 new_account_ms: int = 7 * 24 * HOUR_MS,
                 max_open: int = 64, max_groups: int = 5000, max_listed: int = 5000,
                 min_tokens_quantile: float | None = None, max_pending: int = 4096,
                 seed: int = 0):
        self.min_members = min_members
        self.max_pending = max_pending
        self.min_tokens_quantile = min_tokens_quantile
        self.min_ratio = min_ratio
        self.max_jaccard = max_jaccard
        self.max_gap_ms = max_gap_ms
        self.candidate_quantile = candidate_quantile
        self.min_breadth = min_breadth
        self.young_queries = young_queries
        self.rate_tol = rate_tol
        self.max_repeat = max_repeat
        self.tok_tol = tok_tol
        self.warmup = warmup
        self.established_after_ms = established_after_ms
        self.new_account_ms = new_account_ms
        self.max_open = max_open
        self.max_groups = max_groups
        self.max_listed = max_listed
        self.seed = seed
        if min_members < 2 or min_ratio <= 0 or not 0 < max_jaccard < 1:
            raise ValueError("need min_members >= 2, min_ratio > 0, 0 < max_jaccard < 1")
        if max_gap_ms <= 0 or not 0 <= candidate_quantile < 1 or not 0 <= min_breadth <= 1:
            raise ValueError("need max_gap_ms > 0, 0 <= candidate_quantile < 1, "
                             "0 <= min_breadth <= 1")
        if young_queries < 50 or rate_tol <= 0 or (tok_tol is not None and tok_tol <= 0) \
                or warmup < 1:
            raise ValueError("need young_queries >= 50, rate_tol > 0, tok_tol > 0, warmup >= 1")
        if max_open < 1 or max_groups < 1 or max_listed < 1 or max_pending < 1:
            raise ValueError("max_open, max_groups, max_listed and max_pending must be >= 1")
        self._reset()

    def _reset(self) -> None:
        self._base = _Baseline()
        self._groups: OrderedDict[int, _Group] = OrderedDict()
        self._index: dict[tuple, deque] = {}
        self._member_of: dict[str, int] = {}
        self._pending: OrderedDict[str, tuple] = OrderedDict()  # summaries to judge again
        self._global = None                 # MinHash union of every account: cells reachable
        self._next_gid = 1
        self._first_ts = -1
        self._now = -1
        self.summaries = 0

    def __repr__(self) -> str:
        return (f"CampaignStage(min_members={self.min_members}, min_ratio={self.min_ratio}, "
                f"max_jaccard={self.max_jaccard}, max_gap_ms={self.max_gap_ms}, "
                f"candidate_quantile={self.candidate_quantile}, seed={self.seed})")

    # -- public -----------------------------------------------------------------------------
    def update(self, summary: dict) -> list[Alert]:
        """Learn from one account summary; the campaign alerts it caused (0 or 1)."""
        if summary.get("seed", self.seed) != self.seed:
            raise ValueError("summary sketched with another seed")
        acct, q = summary["account"], int(summary["queries"])
        self.summaries += 1
        ts = int(summary["ts_ms"])
        if self._first_ts < 0:
            self._first_ts = int(summary["first_ts_ms"])
        self._now = max(self._now, ts)
        nv = int(summary.get("with_cells") or 0)
        mh = np.asarray(summary.get("minhash") or [], dtype=np.uint32)
        if nv < 20 or len(mh) == 0:
            return []
        if self._global is None or len(self._global) != len(mh):
            self._global = mh.copy()
        else:
            np.minimum(self._global, mh, out=self._global)
        b = bucket_of(q)
        breadth = min(1.0, summary["distinct_cells"] / nv)
        regions = int(summary.get("regions") or 0)
        warm = self._base.n[b] >= self.warmup
        # an early summary (under 50 queries, by time: the sketcher's EARLY_*) may only
        # join a confirmed campaign; it neither opens a group nor teaches the baselines
        early = q < CHECKPOINTS[0]
        cand = warm and not early and self._candidate(summary, b, breadth, regions, nv, q)
        retest = []
        if not early:
            self._base.learn(b, breadth, regions, summary.get("out_tokens_log"))
            if self._base.n[b] in RETEST_AT:
                retest = self._retest(summary)
        gid = self._member_of.get(acct)
        if gid is not None:
            g = self._groups.get(gid)
            if g is not None:
                self._refresh(g, acct, summary, mh)
                return retest + self._maybe_alert(g, summary, joined=False)
            del self._member_of[acct]
        loose = warm and not cand and self._candidate(summary, b, breadth, regions, nv, q,
                                                      loose=True)
        g = None
        if cand or loose:
            self._expire()
            g = self._place(summary, mh, cand)
        if g is None:
            if not early and self._base.n[b] < _LAST_RETEST \
                    and self._candidate(summary, b, breadth, regions, nv, q, ranked=False):
                self._defer(summary, mh)
            return retest
        self._join(g, summary, mh)
        return retest + self._maybe_alert(g, summary, joined=True)

    def update_many(self, summaries) -> list[Alert]:
        return [a for s in summaries for a in self.update(s)]

    def dump(self) -> bytes:
        """The whole stage state (bounded), for a checkpoint."""
        return pickle.dumps(self._state(), protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, state: bytes) -> None:
        obj = pickle.loads(state)
        if not (isinstance(obj, dict) and obj.get("kind") == "campaign-stage"):
            raise ValueError("not a campaign stage state")
        for k, v in obj.items():
            if k != "kind":
                setattr(self, k, v)

    def _state(self) -> dict:
        keys = ("_base", "_groups", "_index", "_member_of", "_pending", "_global", "_next_gid",
                "_first_ts", "_now", "summaries")
        return {"kind": "campaign-stage", **{k: getattr(self, k) for k in keys}}

    @property
    def groups(self) -> int:
        return len(self._groups)

    def campaigns(self) -> list[dict]:
        """Campaigns found so far: lead, members and counts (for analysts and tests)."""
        return [{"lead": g.lead, "members": list(g.members), "member_count": g.n_members}
                for g in self._groups.values() if g.alerted]

    # -- internals --------------------------------------------------------------------------
    def _candidate(self, s: dict, b: int, breadth: float, regions: int, nv: int,
                   q: int, loose: bool = False, ranked: bool = True) -> bool:
        """Sweep-like for its query count: the absolute conditions, then breadth and
        coverage at the ``candidate_quantile`` of its bucket. ``loose`` (joining a confirmed
        campaign) and ``ranked=False`` (worth judging again): the absolute conditions only,
        ``loose`` re-asking half as often."""
        if q > self.young_queries or nv < 0.5 * q or breadth < self.min_breadth \
                or not self._band_keys(s):
            return False
        rep = s.get("exact_repeat")
        if rep is not None and rep > (self.max_repeat / 2 if loose else self.max_repeat):
            return False
        if not ranked or loose:
            return True
        qq = self.candidate_quantile
        if q < CHECKPOINTS[0]:   # an early summary: fewer queries, fewer regions; breadth only
            return breadth >= self._base.breadth_q(b, qq)
        return breadth >= self._base.breadth_q(b, qq) and regions >= self._base.regions_q(b, qq)

    def _new(self, s: dict) -> bool:
        """A new account (see the class doc): from ``account_created_at`` when the events
        carry it, else from when this stage first saw it."""
        created = s.get("account_created_ms")
        if created is not None:
            return int(s["ts_ms"]) - int(created) <= self.new_account_ms
        return int(s["first_ts_ms"]) >= self._first_ts + self.established_after_ms

    def _band_keys(self, s: dict) -> list[tuple]:
        """Where an account looks for its group: its infrastructure (user agent + address
        prefix) and the prompt skeletons it re-uses. An *established* account (see
        :meth:`_new`) meets others only on the full infrastructure of one machine room
        (user agent *and* address prefix): a worker started on a gateway with customers
        must still see a campaign already running there, and independent products may
        share a popular prompt template or SDK, rarely an address block and an SDK."""
        keys = []
        new = self._new(s)
        if s.get("user_agent"):
            for pre in (s.get("ip_prefixes") or ([0] if new else []))[:3]:
                keys.append(("ua", s["user_agent"], pre))
        if new:
            for h in (s.get("skeletons") or [])[:2]:
                keys.append(("sk", h))
        return keys

    def _compatible(self, g: _Group, s: dict, mh: np.ndarray) -> bool:
        start = s["first_ts_ms"]
        if start > g.last_start + self.max_gap_ms or start < g.first_start - self.max_gap_ms:
            return False
        if (s.get("model") or 0) != g.model or (s.get("endpoint") or 0) != g.endpoint:
            return False
        lr = _log_rate(s)
        if lr is not None and g.n_members and abs(lr - g.rate) > self.rate_tol:
            return False
        if self.tok_tol is not None:
            tok = s.get("out_tokens_log")
            if tok is not None and g.n_members and g.tok and abs(tok - g.tok) > self.tok_tol:
                return False
        if len(g.recent) and float(np.mean(g.recent == mh)) > self.max_jaccard:
            return False
        return True

    def _find_group(self, s: dict, mh: np.ndarray, alerted_only: bool = False) -> _Group | None:
        best, seen = None, set()
        for key in self._band_keys(s):
            for gid in self._index.get(key, ()):
                if gid in seen:
                    continue
                seen.add(gid)
                g = self._groups.get(gid)
                if g is None or (alerted_only and not g.alerted) \
                        or not self._compatible(g, s, mh):
                    continue
                if best is None or (g.alerted, g.n_members) > (best.alerted, best.n_members):
                    best = g
        return best

    def _place(self, s: dict, mh: np.ndarray, cand: bool) -> _Group | None:
        """The group an account joins: the best one filed under its keys (a confirmed
        campaign only, unless it is a candidate), else a new one for a candidate."""
        g = self._find_group(s, mh, alerted_only=not cand)
        return self._open(s, mh) if g is None and cand else g

    def _open(self, s: dict, mh: np.ndarray) -> _Group:
        gid = self._next_gid
        self._next_gid += 1
        g = self._groups[gid] = _Group(gid, s, mh, [])
        self._file(g, self._band_keys(s))
        while len(self._groups) > self.max_groups:
            self._drop(self._oldest_droppable())
        return g

    def _file(self, g: _Group, keys: list) -> None:
        """File group ``g`` under band keys it does not have yet (at most 16 in all): a
        campaign's footprint grows as members on more of its machines join."""
        for key in keys:
            if key in g.keys or len(g.keys) >= 16:
                continue
            g.keys.append(key)
            dq = self._index.get(key)
            if dq is None:
                dq = self._index[key] = deque(maxlen=self.max_open)
            dq.append(g.gid)

    def _oldest_droppable(self) -> int:
        for gid, g in self._groups.items():
            if not g.alerted:
                return gid
        return next(iter(self._groups))

    def _drop(self, gid: int) -> None:
        g = self._groups.pop(gid, None)
        if g is None:
            return
        for a in g.members:
            if self._member_of.get(a) == gid:
                del self._member_of[a]
        for key in g.keys:
            dq = self._index.get(key)
            if dq is not None:
                try:
                    dq.remove(gid)
                except ValueError:
                    pass
                if not dq:
                    del self._index[key]

    def _expire(self) -> None:
        """Forget unalerted groups nobody joined for twice the start gap (bounded work)."""
        horizon = self._now - 2 * self.max_gap_ms
        for _ in range(4):
            if not self._groups:
                return
            gid, g = next(iter(self._groups.items()))
            if g.alerted or g.last_ts >= horizon:
                self._groups.move_to_end(gid)
                return
            self._drop(gid)

    def _join(self, g: _Group, s: dict, mh: np.ndarray) -> None:
        acct = s["account"]
        k = g.n_members
        lr, tok = _log_rate(s), s.get("out_tokens_log")
        if lr is not None:
            g.rate = (g.rate * k + lr) / (k + 1)
        if tok is not None:
            g.tok = (g.tok * k + tok) / (k + 1) if g.tok else tok
        g.n_members += 1
        if len(g.members) < self.max_listed:
            g.members[acct] = (0, 0, 0, None, None)
            self._member_of[acct] = g.gid
        g.first_start = min(g.first_start, s["first_ts_ms"])
        g.last_start = max(g.last_start, s["first_ts_ms"])
        if self._new(s):
            g.new += 1
        if s.get("user_agent"):
            g.uas[s["user_agent"]] += 1
        for p in (s.get("ip_prefixes") or [])[:1]:
            g.prefixes[p] += 1
        for h in s.get("skeletons") or []:
            g.skels[h] += 1
        for c in (g.uas, g.prefixes, g.skels):
            if len(c) > 64:
                for key, _ in c.most_common()[48:]:
                    del c[key]
        g.recent = np.vstack([g.recent[-7:], mh[None, :]])
        self._file(g, self._band_keys(s))
        self._refresh(g, acct, s, mh)

    def _refresh(self, g: _Group, acct: str, s: dict, mh: np.ndarray) -> None:
        if acct in g.members:
            g.members[acct] = (int(s["queries"]), int(s["distinct_cells"]),
                               int(s.get("regions") or 0), _log_rate(s),
                               s.get("out_tokens_log"))
        np.minimum(g.union, mh, out=g.union)
        g.last_ts = max(g.last_ts, int(s["ts_ms"]))
        self._groups.move_to_end(g.gid)

    def _defer(self, s: dict, mh: np.ndarray) -> None:
        """Keep a summary judged against a young baseline (its bucket under the last of
        :data:`RETEST_AT`) that was not a candidate, for :meth:`_retest`: only the fields the
        stage reads, at most ``max_pending`` (oldest dropped first)."""
        acct = s["account"]
        self._pending[acct] = ({k: s[k] for k in _KEPT if k in s}, mh)
        self._pending.move_to_end(acct)
        if len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)

    def _retest(self, s: dict) -> list[Alert]:
        """Judge deferred summaries and unalerted groups again, now that a bucket's baseline
        has grown (:data:`RETEST_AT`). Both were otherwise judged only when a summary arrived,
        and machine-paced accounts often finish before human-paced customers have taught the
        baseline what a typical account reaches (a worker started while a hydra runs). A
        deferred summary joins a group as it would have on arrival (a confirmed campaign
        only, if it is not a candidate); its last chance is when its bucket reaches the
        last count. Alerts go out with ``s``, the summary that completed the count."""
        out: dict[int, Alert] = {}
        confirmed = True
        while confirmed:               # a group confirmed here may take the loose ones
            joined = self._judge_pending()
            confirmed = False
            for g in list(self._groups.values()):
                if g.n_members >= self.min_members and (not g.alerted or g.gid in joined):
                    was = g.alerted
                    self._consistent(g)
                    for a in self._test(g, s):
                        out[g.gid] = a
                        confirmed |= not was
        return list(out.values())

    def _judge_pending(self) -> set[int]:
        """Deferred summaries that now join a group; the groups they joined."""
        joined: set[int] = set()
        for acct, (p, mh) in list(self._pending.items()):
            q, nv = int(p["queries"]), int(p.get("with_cells") or 0)
            b = bucket_of(q)
            if acct in self._member_of:
                del self._pending[acct]
                continue
            if self._base.n[b] < self.warmup:
                continue
            args = (p, b, min(1.0, p["distinct_cells"] / nv), int(p.get("regions") or 0), nv, q)
            cand = self._candidate(*args)
            g = self._place(p, mh, cand) if cand or self._candidate(*args, loose=True) else None
            if g is not None:
                self._join(g, p, mh)
                joined.add(g.gid)
            if g is not None or self._base.n[b] >= _LAST_RETEST:
                del self._pending[acct]
        return joined

    def _typical_sum(self, qs: np.ndarray, cells: np.ndarray) -> float:
        """Distinct cells as many typical accounts of these query counts (``qs``) reach in
        all. The typical account is the median of the accounts *outside* the group: the
        members' own summaries (``cells`` distinct cells each, binned as cells / queries)
        are taken out of the baseline first, or a hydra of hundreds of accounts would be
        the typical account itself."""
        buckets = [bucket_of(int(q)) for q in qs.tolist()]
        own = np.zeros_like(self._base.breadth)
        bins = np.minimum((cells / np.maximum(qs, 1) * _BREADTH_BINS).astype(int),
                          _BREADTH_BINS - 1)
        np.add.at(own, (buckets, bins), 1.0)
        med: dict[int, float] = {}
        for b in set(buckets):
            m = _Baseline._q(np.maximum(self._base.breadth[b] - own[b], 0.0), 0.5,
                             1.0 / _BREADTH_BINS)
            med[b] = 0.5 if math.isnan(m) else max(m, 0.02)
        return float(sum(med[b] * q for b, q in zip(buckets, qs.tolist())))

    def _maybe_alert(self, g: _Group, s: dict, joined: bool) -> list[Alert]:
        if g.n_members < self.min_members or (g.alerted and not joined):
            return []
        acct = s["account"]
        if not g.alerted or g.n_members <= 64 or g.n_members % 64 == 0:
            self._consistent(g)              # full pass (O(members)): small or every 64 joins
        elif acct in g.members and acct not in g.names[-1:] and self._fits(g, g.members[acct]):
            g.names.append(acct)
        if joined and acct not in g.names:
            return []
        return self._test(g, s)

    def _test(self, g: _Group, s: dict) -> list[Alert]:
        """The campaign test on the named members; the (re-)emitted alert if it passes."""
        names = g.names
        if len(names) < self.min_members:
            return []
        sample = names if len(names) <= 1000 else names[:500] + names[-500:]
        vals = [g.members[a] for a in sample]
        qs = np.array([v[0] for v in vals], dtype=float)
        scale = len(names) / len(sample)
        reach = scale * sum(v[1] for v in vals)
        union = max(minhash_distinct(g.union), max(v[1] for v in vals))
        typical = scale * self._typical_sum(qs, np.array([v[1] for v in vals], dtype=float))
        ratio = reach / max(typical, 1.0)
        if not g.alerted and (ratio < self.min_ratio or self._short_answers(g)):
            return []
        g.alerted = True
        if g.lead not in g.members:
            g.lead = names[0]
        if names[0] != g.lead:               # the lead is fixed from the first alert on
            if g.lead in names:
                names.remove(g.lead)
            names.insert(0, g.lead)
        return [self._alert(g, s, union, reach, typical, ratio, qs, list(names))]

    def _short_answers(self, g: _Group) -> bool:
        if self.min_tokens_quantile is None or g.med[1] is None:
            return False
        floor = self._base.tokens_q(self.min_tokens_quantile)
        return not math.isnan(floor) and g.med[1] < floor

    def _fits(self, g: _Group, v: tuple) -> bool:
        mp, mt = g.med
        if mp is not None and v[3] is not None and abs(v[3] - mp) > self.rate_tol:
            return False
        return not (self.tok_tol is not None and mt is not None and v[4] is not None
                    and abs(v[4] - mt) > self.tok_tol)

    def _consistent(self, g: _Group) -> None:
        """Members whose pace and output length sit near the group's medians (a lead that
        opened the group but turns out to be an outlier is not named)."""
        vals = list(g.members.values())
        paces = [v[3] for v in vals if v[3] is not None]
        toks = [v[4] for v in vals if v[4] is not None]
        g.med = (float(np.median(paces)) if paces else None,
                 float(np.median(toks)) if toks else None)
        g.names = [a for a, v in g.members.items() if self._fits(g, v)]

    def _alert(self, g: _Group, s: dict, union: float, reach: float, typical: float,
               ratio: float, qs: np.ndarray, members: list[str]) -> Alert:
        k = len(members) + max(0, g.n_members - len(g.members))
        listed = len(members)
        total = int(qs.mean() * k) if len(qs) != k else int(qs.sum())
        span_h = (g.last_start - g.first_start) / HOUR_MS
        shared = {"model_and_endpoint": 1.0}
        for name, c in (("user_agent", g.uas), ("ip_prefix", g.prefixes),
                        ("skeleton", g.skels)):
            if c:
                shared[name] = round(c.most_common(1)[0][1] / k, 3)
        signals = ["complementary coverage", "similar volume and timing",
                   "same model and endpoint"]
        signals += [f"shared {n.replace('_', ' ')}" for n, v in shared.items()
                    if n != "model_and_endpoint" and v >= 0.5]
        new_share = g.new / k
        if new_share >= 0.9:
            signals.append("new accounts")
        who = f"{k:,} {'new ' if new_share >= 0.9 else ''}accounts"
        span = f"{span_h:.0f} h" if span_h >= 1 else f"{span_h * 60:.0f} min"
        summary = (f"{who} started within {span} reached {union:,.0f} distinct cells together "
                   f"in {total:,} queries (each {int(qs.min()):,}-{int(qs.max()):,}), "
                   f"{ratio:.1f}x the {typical * k / listed:,.0f} cells {k:,} typical accounts "
                   f"of that size reach, with little overlap between them; shared: "
                   f"{', '.join(signals[2:])}")
        evidence = {
            "summary": summary, "member_count": k, "members_listed": len(members),
            "union_distinct_cells": int(round(float(union))), "total_queries": total,
            "member_distinct_cells_sum": int(round(reach)),
            "typical_distinct_cells_sum": int(round(typical)),
            "ratio": round(float(ratio), 2), "start_span_h": round(float(span_h), 2),
            "first_start": g.first_start, "last_start": g.last_start,
            "new_account_share": round(new_share, 3),
            "queries_per_account": {"min": int(qs.min()), "median": round(float(np.median(qs)), 1),
                                    "max": int(qs.max())},
            "shared": shared, "signals": signals,
        }
        return Alert.new(tenant_id=g.lead, detector=self.detector, ts_ms=int(s["ts_ms"]),
                         severity="critical" if k >= 10 else "warning", score=float(ratio),
                         threshold=self.min_ratio, events_seen=total, evidence=evidence,
                         episode=f"campaign@{g.opened}", related_tenants=members[1:])
