"""Per-account sketches for the coordinated-campaign stage: a few hundred bytes per account.

:class:`AccountSketcher` folds every event (with what the detector said about it, a
:class:`~pipeline.detect.base.Scored`) into a compact per-account sketch and, at the
account's 50th, 100th and 200th query and then every ``every`` queries, emits an
*account summary* (and one *early* summary for an account still under 50 queries, with at
least :data:`EARLY_MIN`, :data:`EARLY_AFTER_MS` after its first: a campaign's accounts that
arrive at a human pace are seen too): a small JSON-serialisable dict (well under 2 KB) that is all the global
:class:`~pipeline.campaigns.stage.CampaignStage` ever sees. The stage therefore scales with
the number of accounts, not of events.

Sketch of one account (tenant):

- ``minhash``: ``n_hashes`` 32-bit minima over the coarse locality cells it reached
  (:attr:`Scored.cell`; 0 = no vector): Jaccard between accounts, and the union of a group
  (element-wise minimum) estimates how many distinct cells the group reached together.
- a 1024-bit linear-counting bitmap of cells: its distinct-cell count (exact enough up to a
  few thousand cells; the MinHash estimate takes over when the bitmap fills up).
- ``regions``: which of 64 coarse regions it touched (the low 6 bits of a sign-projection
  cell are its 6-bit cell, see :mod:`pipeline.detect.lsh`): how far across the space it is.
- prompt skeletons (the detector's: head and tail, lower-cased, digits normalised; see
  :func:`~pipeline.detect.features.prompt_bits`, which the detector already computed for the
  event and passes along in its :class:`~pipeline.detect.base.ScoredBatch`): share of
  prompts re-using a skeleton the account used before, share of exact repeats, and the
  bottom-``skeleton_k`` 24-bit ids of re-used skeletons (a template signature shared by
  accounts filled from one template).
- first and last event time, query count, inter-arrival mean and coefficient of variation,
  mean log output tokens.
- client metadata when present: hashes of model, endpoint, user agent, the client IP's /24
  (or /48) prefix, and how many distinct API keys and prefixes it used.

>>> from pipeline.contracts.events import Event
>>> from pipeline.detect.base import Scored
>>> sk = AccountSketcher(seed=1)
>>> evs = [Event(f"e{i}", 1767225600000 + 60_000 * i, "acct-1", prompt=f"Question {i}: why?",
...              client_ip="203.0.113.9", user_agent="curl/8") for i in range(120)]
>>> sk.observe_batch(evs, [Scored(cell=1 + 17 * i) for i in range(120)])
>>> [(s["account"], s["queries"], abs(s["distinct_cells"] - s["queries"]) <= 3)
...  for s in sk.drain()]
[('acct-1', 50, True), ('acct-1', 100, True)]
>>> sk.drain()
[]
>>> state = sk.dump_tenant("acct-1")
>>> sk2 = AccountSketcher(seed=1)
>>> sk2.load_tenant("acct-1", state)
>>> sk2.dump_tenant("acct-1") == state
True
"""
from __future__ import annotations

import math
import pickle
import zlib
from collections import OrderedDict
from typing import Sequence

import numpy as np

from pipeline.contracts.scored import ScoredBatch, scored_columns
from pipeline.detect.features import prompt_bits, set_bit, skeleton_ids

SUMMARY_VERSION = 1
BITMAP_BITS = 1024
EXACT_BITS = 2048
SKEL_BITS = 1024
CHECKPOINTS = (50, 100, 200)
EARLY_MIN = 20                  # an early summary: this many queries or more, under 50,
EARLY_AFTER_MS = 6 * 3_600_000  # this long after the account's first (as detector windows)
PIECES_MIN = 256           # batches folded in pieces: from this many events,
PIECES_PER_ACCOUNT = 4     # this many per account on average
_MAX_PREFIXES = 8
_MAX_KEYS = 16


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: stable 64-bit hashes of uint64 integers (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def text_hash(s: str | None) -> int:
    """Stable 32-bit hash of a string (0 for None/empty), CRC32 so it survives restarts."""
    if not s:
        return 0
    return zlib.crc32(s.encode("utf-8", "surrogatepass")) or 1


# address -> hash of its prefix, API key id -> its hash: the same few recur on every event
_PREFIXES: dict[str, int] = {}
_KEYS: dict[str, int] = {}


def _remember(cache: dict, s: str, h: int) -> int:
    if len(cache) >= 1 << 15:
        cache.clear()
    cache[s] = h
    return h


def ip_prefix(ip: str | None) -> str | None:
    """The /24 of an IPv4 address, the /48 of an IPv6 one (None when absent)."""
    if not ip:
        return None
    if ":" in ip:
        return ":".join(ip.split(":")[:3])
    return ip.rsplit(".", 1)[0]


class _Acct:
    """One account's sketch (slotted: a few hundred bytes)."""

    __slots__ = ("n", "nv", "npr", "first_ts", "last_ts", "minhash", "bitmap", "regions",
                 "seen", "seen_sk", "sk_rep", "ex_rep", "sk_sig", "gap_n", "gap_mean", "gap_m2",
                 "tok_n", "tok_sum", "model", "endpoint", "ua", "prefixes", "keys",
                 "next_emit", "created", "early")

    def __init__(self, n_hashes: int):
        self.n = self.nv = self.npr = 0
        self.first_ts = self.last_ts = -1
        self.minhash = np.full(n_hashes, 0xFFFFFFFF, dtype=np.uint32)
        self.bitmap = bytearray(BITMAP_BITS // 8)
        self.regions = 0
        self.seen = bytearray(EXACT_BITS // 8)    # exact prompt hashes (one bit each)
        self.seen_sk = bytearray(SKEL_BITS // 8)  # skeleton hashes
        self.sk_rep = self.ex_rep = 0
        self.sk_sig: list[int] = []         # bottom-k of re-used skeleton hashes
        self.gap_n = 0
        self.gap_mean = self.gap_m2 = 0.0   # Welford over log10 inter-arrival seconds
        self.tok_n = 0
        self.tok_sum = 0.0
        self.model = self.endpoint = self.ua = 0
        self.prefixes: list[int] = []
        self.keys: list[int] = []
        self.next_emit = CHECKPOINTS[0]
        self.created = -1                   # account_created_at (epoch ms), -1: unknown
        self.early = False                  # its early summary was emitted

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state):
        self.created = -1                   # checkpoints from before the fields existed
        self.early = False
        for k, v in zip(self.__slots__, state):
            setattr(self, k, v)



def _early_due(a: _Acct, ts: int, n: int | None = None, first: int | None = None) -> bool:
    """Whether the account's early summary is due after an event at ``ts`` is folded
    (``n``, ``first``: its count and first time then, when not folded yet)."""
    n = a.n if n is None else n
    first = a.first_ts if first is None else first
    return not a.early and a.next_emit == CHECKPOINTS[0] and EARLY_MIN <= n < CHECKPOINTS[0] \
        and ts >= first + EARLY_AFTER_MS


def _early_at(a: _Acct, events: Sequence, idx: list[int]) -> int | None:
    """Which of the account's next events (``events[idx]``, in order) makes its early
    summary due, as :func:`_early_due` says event by event; None: none of them. Only the
    events that bring its count into ``[EARLY_MIN, 50)`` are looked at."""
    if a.early or a.next_emit != CHECKPOINTS[0]:
        return None
    first = a.first_ts if a.first_ts >= 0 else events[idx[0]].ts_ms
    for j in range(max(0, EARLY_MIN - a.n - 1), min(len(idx), CHECKPOINTS[0] - a.n - 1)):
        if _early_due(a, events[idx[j]].ts_ms, a.n + j + 1, first):
            return j
    return None


def _popcount(bm: bytearray) -> int:
    return int.from_bytes(bm, "little").bit_count()


def _corrected(share: float, bloom: bytearray) -> float:
    """A repeat share net of the one-bit Bloom filter's false positives (about its fill)."""
    fill = _popcount(bloom) / (8 * len(bloom))
    return round(max(0.0, (share - 0.5 * fill) / max(1.0 - 0.5 * fill, 1e-9)), 4)


def minhash_distinct(mh: np.ndarray) -> float:
    """Distinct items behind a MinHash of 32-bit minima: (k - 1) / sum(min / 2^32)."""
    u = np.asarray(mh, dtype=np.float64) / 4294967296.0
    full = u < 1.0 - 1e-9
    if not full.any():
        return 0.0
    return float((len(u) - 1) / max(float(u.sum()), 1e-12))


def distinct_estimate(bitmap: bytearray, mh: np.ndarray) -> int:
    """Linear counting on the bitmap while it is below 80% full, MinHash estimate beyond."""
    ones = _popcount(bitmap)
    if ones < 0.8 * BITMAP_BITS:
        return int(round(-BITMAP_BITS * math.log(1.0 - ones / BITMAP_BITS)))
    return int(round(minhash_distinct(mh)))


class AccountSketcher:
    """Per-account sketches updated per event; account summaries out, for the campaign stage.

    Parameters
    ----------
    n_hashes
        MinHash size (32-bit minima) per account.
    every
        After the first checkpoints (50, 100, 200 queries), emit a summary every ``every``
        queries.
    skeleton_k
        How many re-used skeleton hashes (bottom-k) a summary carries.
    max_accounts
        Accounts kept; beyond, the least recently active is forgotten (its next event
        starts a fresh sketch).
    seed
        Seed of the MinHash functions (stage and sketcher must agree on it to compare
        sketches of different workers; it travels in every summary).
    """

    def __init__(self, n_hashes: int = 64, every: int = 200, skeleton_k: int = 8,
                 max_accounts: int = 1_000_000, seed: int = 0):
        self.n_hashes = n_hashes
        self.every = every
        self.skeleton_k = skeleton_k
        self.max_accounts = max_accounts
        self.seed = seed
        if not 8 <= n_hashes <= 256:
            raise ValueError("n_hashes must be in 8..256")
        if every < 1 or skeleton_k < 0 or max_accounts < 1:
            raise ValueError("need every >= 1, skeleton_k >= 0, max_accounts >= 1")
        self._reset()

    def _reset(self) -> None:
        rng = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, 0xCA3])
        self._a = rng.integers(1, 1 << 63, self.n_hashes, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 1 << 63, self.n_hashes, dtype=np.uint64)
        self._accts: OrderedDict[str, _Acct] = OrderedDict()
        self._texts: dict = {}   # prompt signals, when the detector does not pass them
        self._out: list[dict] = []

    def __repr__(self) -> str:
        return (f"AccountSketcher(n_hashes={self.n_hashes}, every={self.every}, "
                f"skeleton_k={self.skeleton_k}, max_accounts={self.max_accounts}, "
                f"seed={self.seed})")

    @property
    def accounts(self) -> int:
        return len(self._accts)

    def cell_minhashes(self, cells: np.ndarray) -> np.ndarray:
        """``uint32[len(cells), n_hashes]``: the hash values each cell contributes."""
        x = np.asarray(cells, dtype=np.uint64)
        x = (x + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(31)
        h = x[:, None] * self._a[None, :] + self._b[None, :]
        return (h >> np.uint64(32)).astype(np.uint32)

    def observe_batch(self, events: Sequence, scored: Sequence) -> None:
        """Fold a batch of events (event-time order per account) and their Scored in.

        A batch with many events per account is folded in pieces (:meth:`_fold_pieces`),
        others event by event, where the per-batch numpy and per-piece set-up would cost
        more than they save. Both give the same sketches and summaries.
        """
        if len(events) != len(scored):
            raise ValueError("events and scored must have the same length")
        if not events:
            return
        cells = scored_columns(scored)[0]
        bits = scored.bits if isinstance(scored, ScoredBatch) else None
        if bits is None:    # a detector that does not pass prompt signals along
            bits = [prompt_bits(e.prompt, self._texts) for e in events]
        tids = [e.tenant_id for e in events]
        if len(events) >= PIECES_MIN and len(events) >= PIECES_PER_ACCOUNT * len(set(tids)):
            self._fold_pieces(events, tids, cells, bits)
            return
        c = np.asarray(cells, dtype=np.int64)
        mh = self.cell_minhashes(c)
        pos = (_mix64(c.astype(np.uint64)) % np.uint64(BITMAP_BITS)).tolist()
        account = self._account
        for i, (e, tid, cell) in enumerate(zip(events, tids, c.tolist())):
            a = account(tid)
            if cell > 0:
                a.nv += 1
                np.minimum(a.minhash, mh[i], out=a.minhash)
                set_bit(a.bitmap, pos[i])
                a.regions |= 1 << ((cell - 1) & 63)
            self._fold(a, [e], [bits[i]])
            if a.n >= a.next_emit:
                self._out.append(self._summary(tid, a))
                a.next_emit = self._next_emit(a.next_emit)
            elif _early_due(a, e.ts_ms):
                self._out.append(self._summary(tid, a))
                a.early = True

    def _fold_pieces(self, events: Sequence, tids: list, cells: list, bits: list) -> None:
        """The batch account by account, in *pieces* that end at the event where the account
        reaches a checkpoint (its summary is the state right after it): MinHash, cell
        bitmap and regions cost a few numpy operations per batch and one per piece, the rest
        one Python loop per part (:meth:`_fold`). Accounts are independent, so this gives
        what folding event by event gives; summaries are put back in event order."""
        order: list[int] = []    # the batch's event indices, account by account
        pieces = []              # (sketch, start, end) in ``order``
        early = set()            # pieces after which the account's early summary is due
        for a, idx in self._touch(tids).items():
            n, due, lo = a.n, a.next_emit, len(order)
            order += idx
            at = _early_at(a, events, idx)   # its position in ``idx``
            cut = -1 if at is None else lo + at + 1
            while lo < len(order):
                hi = min(len(order), lo + max(due - n, 1))
                if lo < cut < hi:
                    hi = cut
                if hi == cut:
                    early.add(len(pieces))
                pieces.append((a, lo, hi))
                n += hi - lo
                if n >= due:
                    due = self._next_emit(due)
                lo = hi
        c = np.asarray(cells, dtype=np.int64)[order]
        has = c > 0
        starts = np.array([lo for _, lo, _ in pieces])
        u, inv = np.unique(c, return_inverse=True)   # a batch re-visits cells a lot
        mh = self.cell_minhashes(u)
        mh[u <= 0] = 0xFFFFFFFF    # no cell: nothing to take the minimum with
        mins = np.minimum.reduceat(mh[inv], starts)
        nv = np.add.reduceat(has.astype(np.int64), starts).tolist()
        region = np.left_shift(np.uint64(1), ((c - 1) & 63).astype(np.uint64))
        regions = np.bitwise_or.reduceat(np.where(has, region, np.uint64(0)), starts).tolist()
        cell_bits = np.zeros((len(pieces), BITMAP_BITS), dtype=bool)
        piece_of = np.repeat(np.arange(len(pieces)), [hi - lo for _, lo, hi in pieces])
        cell_bits[piece_of[has], _mix64(c[has].astype(np.uint64)) % np.uint64(BITMAP_BITS)] = True
        bitmaps = np.packbits(cell_bits, axis=1, bitorder="little")   # set_bit's layout
        evs = [events[i] for i in order]
        bits = [bits[i] for i in order]
        out = []
        for k, (a, lo, hi) in enumerate(pieces):
            if nv[k]:
                a.nv += nv[k]
                np.minimum(a.minhash, mins[k], out=a.minhash)
                bm = np.frombuffer(a.bitmap, dtype=np.uint8)
                np.bitwise_or(bm, bitmaps[k], out=bm)
                a.regions |= regions[k]
            self._fold(a, evs[lo:hi], bits[lo:hi])
            if a.n >= a.next_emit:
                out.append((order[hi - 1], self._summary(tids[order[lo]], a)))
                a.next_emit = self._next_emit(a.next_emit)
            elif k in early:
                out.append((order[hi - 1], self._summary(tids[order[lo]], a)))
                a.early = True
        out.sort(key=lambda x: x[0])
        self._out += [s for _, s in out]

    def _touch(self, tids: list[str]) -> dict[_Acct, list[int]]:
        """Each event's account sketch (created, or marked most recently used), event by
        event as the LRU must be; -> sketch: its events. Keyed by sketch, not account: an
        account forgotten and seen again within the batch has two."""
        account = self._account
        groups: dict[_Acct, list[int]] = {}
        for i, tid in enumerate(tids):
            a = account(tid)
            g = groups.get(a)
            if g is None:
                groups[a] = [i]
            else:
                g.append(i)
        return groups

    def _account(self, tid: str) -> _Acct:
        """The account's sketch, created (forgetting the least recently active beyond
        ``max_accounts``) or marked most recently used."""
        accts = self._accts
        a = accts.get(tid)
        if a is None:
            a = accts[tid] = _Acct(self.n_hashes)
            if len(accts) > self.max_accounts:
                accts.popitem(last=False)
        else:
            accts.move_to_end(tid)
        return a

    def _next_emit(self, due: int) -> int:
        return due * 2 if due < CHECKPOINTS[-1] else due + self.every

    def _fold(self, a: _Acct, evs: list, bits: list) -> None:
        """Fold events of account ``a`` (in order) and their prompt signals into its sketch,
        all but the cells (which the callers fold for a whole batch): a loop per part,
        state in locals. The per-event path calls it with one event."""
        first, last, gn, mean, m2 = a.first_ts, a.last_ts, a.gap_n, a.gap_mean, a.gap_m2
        tok_n, tok_sum = a.tok_n, a.tok_sum
        log10, log1p = math.log10, math.log1p
        for e in evs:     # Welford over log10 gaps, sum of log tokens: floats, in order
            ts = e.ts_ms
            if first < 0:
                first = ts
            elif last >= 0:
                gap = log10(1.0 + max(ts - last, 0) / 1000.0)
                gn += 1
                d = gap - mean
                mean += d / gn
                m2 += d * (gap - mean)
            if ts > last:
                last = ts
            tok = e.output_tokens
            if tok is not None:
                tok_n += 1
                tok_sum += log1p(tok)
        a.first_ts, a.last_ts, a.gap_n, a.gap_mean, a.gap_m2 = first, last, gn, mean, m2
        a.tok_n, a.tok_sum = tok_n, tok_sum
        seen, seen_sk, sig, k = a.seen, a.seen_sk, a.sk_sig, self.skeleton_k
        npr = ex_rep = sk_rep = 0
        for b in bits:
            if b is None or b < 0:
                continue
            npr += 1
            j = b % EXACT_BITS
            if seen[j >> 3] & 1 << (j & 7):    # set_bit, inlined: most prompts stop here
                ex_rep += 1
                continue
            seen[j >> 3] |= 1 << (j & 7)
            rep = 0
            for sk in skeleton_ids(b):
                if sk and not set_bit(seen_sk, (sk * 2654435761) % SKEL_BITS):
                    rep = sk
            if rep:
                sk_rep += 1
                if rep not in sig and (len(sig) < k or rep < sig[-1]):
                    sig.append(rep)
                    sig.sort()
                    del sig[k:]
        a.npr += npr
        a.ex_rep += ex_rep
        a.sk_rep += sk_rep
        for n, e in enumerate(evs, a.n + 1):   # client metadata: first values, a few
            if n > 3 and a.model:                # address prefixes and API keys
                break
            if a.created < 0 and e.account_created_ms is not None:
                a.created = e.account_created_ms
            a.model = a.model or text_hash(e.model)
            a.endpoint = a.endpoint or text_hash(e.endpoint)
            a.ua = a.ua or text_hash(e.user_agent)
        a.n += len(evs)
        prefixes, keys = a.prefixes, a.keys   # first of each, in order: distinct pairs do
        for ip, key in dict.fromkeys([(e.client_ip, e.api_key_id) for e in evs]):
            if ip and len(prefixes) < _MAX_PREFIXES:
                ph = _PREFIXES.get(ip)
                if ph is None:
                    ph = _remember(_PREFIXES, ip, text_hash(ip_prefix(ip)))
                if ph not in prefixes:
                    prefixes.append(ph)
            if key and len(keys) < _MAX_KEYS:
                kh = _KEYS.get(key)
                if kh is None:
                    kh = _remember(_KEYS, key, text_hash(key))
                if kh not in keys:
                    keys.append(kh)

    def _summary(self, tid: str, a: _Acct) -> dict:
        gap_sd = math.sqrt(a.gap_m2 / (a.gap_n - 1)) if a.gap_n > 1 else 0.0
        span_h = max(a.last_ts - a.first_ts, 1) / 3_600_000
        return {
            "v": SUMMARY_VERSION, "seed": self.seed, "account": tid, "ts_ms": a.last_ts,
            "first_ts_ms": a.first_ts, "queries": a.n, "with_cells": a.nv,
            "distinct_cells": distinct_estimate(a.bitmap, a.minhash) if a.nv else 0,
            "regions": a.regions.bit_count(),
            "minhash": a.minhash.tolist() if a.nv else [],
            "prompts": a.npr,
            "skeleton_repeat": round(a.sk_rep / a.npr, 4) if a.npr else None,
            "exact_repeat": _corrected(a.ex_rep / a.npr, a.seen) if a.npr else None,
            "skeletons": list(a.sk_sig),
            "rate_per_h": round(a.n / span_h, 3) if a.n > 1 else None,
            "gap_log10_mean": round(a.gap_mean, 4) if a.gap_n else None,
            "gap_log10_sd": round(gap_sd, 4) if a.gap_n > 1 else None,
            "out_tokens_log": round(a.tok_sum / a.tok_n, 4) if a.tok_n else None,
            "model": a.model, "endpoint": a.endpoint, "user_agent": a.ua,
            "ip_prefixes": list(a.prefixes[:4]), "n_prefixes": len(a.prefixes),
            "n_keys": len(a.keys),
            "account_created_ms": a.created if a.created >= 0 else None,
        }

    def drain(self) -> list[dict]:
        """Account summaries emitted since the last call."""
        out, self._out = self._out, []
        return out

    def dump_tenant(self, tenant_id: str) -> bytes | None:
        """One account's sketch as bytes (None if unknown), for checkpoints."""
        a = self._accts.get(tenant_id)
        return None if a is None else pickle.dumps(a, protocol=pickle.HIGHEST_PROTOCOL)

    def load_tenant(self, tenant_id: str, state: bytes) -> None:
        a = pickle.loads(state)
        if not isinstance(a, _Acct) or len(a.minhash) != self.n_hashes:
            raise ValueError("not an account sketch of this sketcher")
        self._accts[tenant_id] = a
        self._accts.move_to_end(tenant_id)
        while len(self._accts) > self.max_accounts:
            self._accts.popitem(last=False)
