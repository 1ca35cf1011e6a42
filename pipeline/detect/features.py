"""Per-tenant state, its per-event update and the window summary it emits every W events.

The state is a small slotted dataclass of bitmaps, a bottom-k sketch, an ADWIN and
window counters (a few KB; :func:`state_bytes` measures it). :mod:`pipeline.detect.fold`
folds events in, stopping where a window closes (:class:`Windows`: by count, or by time
for a tenant with few events); :func:`summarise` turns the current window into a feature
vector and starts the next window. Nothing here knows about other tenants: population scoring
lives in :mod:`pipeline.detect.population`.

Features of one window (all in [0, 1] except where noted; NaN when the window had no
event carrying the signal):

- ``nov8``/``nov12``/``nov14``: share of queries landing in a locality cell (8/12/14-bit
  sign-projection cells) the tenant had never reached before: coverage growth.
- ``spread``: distinct 8-bit cells among the window's queries / queries: how many
  different broad topics one window touches (a sweep: nearly one per query). A window
  with fewer queries than a full one is corrected to what a full window of the same
  uniform breadth would give (fewer draws collide less), so short windows closed by time
  are not broader by construction.
- ``spread6``: the same over 6-bit cells; ``xspread``: its rise over the tenant's own slow
  average (a new feature adds one or two topics; a thief's sweep adds many).
- ``tmpl``: share of new prompts whose head or tail skeleton the tenant used before.
- ``cot``: share of prompts asking for chain-of-thought.
- ``newp``: share of prompts the tenant never sent before (exact text).
- ``out_tok``: mean log output tokens, scaled by log(8192).
- ``regular``: 1 - coefficient of variation of inter-arrival times (1 = clockwork).
- ``rate``: log10(1 + queries per hour) / 5.
- ``growth``: log(distinct 12-bit cells) / log(queries with vectors), cumulative.
- ``newclient``: share of queries from a client fingerprint (user agent and address) the
  tenant first used after its first 50 queries: a stolen key used from elsewhere.
- ``clientnovel``: share of queries from such a new client that also land in a fine
  region the tenant never reached (a new office re-asks the usual; a thief sweeps).
- ``drift``: rise of the novelty rate against the tenant's own past: ADWIN (fed each
  query's 14-bit novelty indicator) estimates the mean since the last change it detected;
  drift is that minus a slow average over the tenant's earlier windows.
- ``xnov``: this window's 14-bit novelty rate minus that slow average (from the fourth
  window on): an established app that re-asks its own topics sits near 0; a stolen key
  sweeping through the app's own client lifts it by about the thief's share of traffic,
  window after window, with nothing else about the tenant changing.
"""
from __future__ import annotations

import math
import pickle
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

from river.drift import ADWIN

from pipeline.detect.drift import DriftState
from pipeline.detect.text_signals import exact_hash, is_cot, skeletons

FEATURES = ("nov8", "nov12", "nov14", "spread", "spread6", "xspread", "fresh", "tmpl", "cot",
            "newp", "out_tok",
            "regular", "rate", "growth", "drift", "xnov", "newclient", "clientnovel")
ESTABLISHED = 50           # events after which a client fingerprint counts as new to the tenant
MAX_CLIENTS = 32
MINHASH_K = 16
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
NAN = float("nan")


WINDOW = 50                # events in a full window


class Windows(NamedTuple):
    """When a tenant's window closes: at its ``count``-th event, or at the first event
    ``span_ms`` or more after the window's first once it holds ``min_events`` (so a tenant
    sending a few queries a day is still judged, every ``span_ms`` or so). A tenant's first
    window always closes by count: first windows are compared with first windows, and
    a short one looks broader than it is (every query new to the tenant)."""
    count: int = WINDOW
    span_ms: int = 6 * 3_600_000
    min_events: int = 30


def _distinct(cells: int, n: int) -> float:
    """Expected distinct cells among ``n`` uniform draws over ``cells`` cells."""
    return cells * (1.0 - (1.0 - 1.0 / cells) ** n)


def _new_adwin() -> ADWIN:
    # fed the 14-bit novelty indicator of every query; looks for a cut every 16 queries
    return ADWIN(delta=0.002, clock=16, min_window_length=8, grace_period=32)


@dataclass(slots=True)
class TenantState:
    n: int = 0                 # events seen
    nv: int = 0                # events with a vector
    npr: int = 0               # events with a prompt
    distinct12: int = 0
    last_ts: int = -1
    seen8: bytearray = field(default_factory=lambda: bytearray(32))
    seen12: bytearray = field(default_factory=lambda: bytearray(512))
    seen14: bytearray = field(default_factory=lambda: bytearray(2048))
    sk_seen: bytearray = field(default_factory=lambda: bytearray(512))    # 4096-bit
    ex_seen: bytearray = field(default_factory=lambda: bytearray(1024))   # 8192-bit
    w_cells: bytearray = field(default_factory=lambda: bytearray(40))  # window's 8- and 6-bit cells
    minhash: list = field(default_factory=list)   # bottom-k hashes of 14-bit cells
    adwin: ADWIN = field(default_factory=_new_adwin)
    content: DriftState = field(default_factory=DriftState)   # random-feature means (drift.py)
    nov_base: float = -1.0     # slow EWMA over windows of the 14-bit novelty rate
    spread_base: float = -1.0  # slow EWMA over windows of spread6
    drift_level: float = 0.0   # ADWIN's current novelty estimate minus nov_base (>= 0)
    # window counters
    w_n: int = 0
    w_v: int = 0
    w_p: int = 0
    w_nov8: int = 0
    w_nov12: int = 0
    w_nov14: int = 0
    w_spread: int = 0
    w_spread6: int = 0
    w_newclient: int = 0
    w_clientnovel: int = 0
    clients: dict = field(default_factory=dict)  # fingerprint -> first seen after ESTABLISHED
    w_fresh: int = 0
    w_tmpl: int = 0
    w_cot: int = 0
    w_newp: int = 0
    w_tok_n: int = 0
    w_tok: float = 0.0
    w_first_ts: int = -1
    w_dt_n: int = 0
    w_dt: float = 0.0
    w_dt2: float = 0.0
    windows: int = 0
    # alert policy
    smooth: float = 0.0
    alerting: bool = False
    episode: int = 0
    quiet_until: int = 0
    last_fired: str = ""
    prev_cov: float = math.nan  # the previous window's own unscaled coverage score


def set_bit(bm: bytearray, i: int) -> bool:
    """Set bit ``i``; return True when it was not set before."""
    byte, bit = i >> 3, 1 << (i & 7)
    if bm[byte] & bit:
        return False
    bm[byte] |= bit
    return True


def client_hash(ua: str | None, ip: str | None) -> int:
    """Hash of a client fingerprint (user agent, address); 0 when the event names neither.

    Cached as user agent -> address -> hash: nested lookups allocate nothing, where a
    (ua, ip) key would be one more object per event for the garbage collector to track.
    """
    by_ip = _CLIENTS.get(ua)
    if by_ip is None:
        if len(_CLIENTS) >= CACHE_SIZE:
            _CLIENTS.clear()
        by_ip = _CLIENTS[ua] = {}
    h = by_ip.get(ip)
    if h is None:
        if len(by_ip) >= CACHE_SIZE:
            by_ip.clear()
        h = by_ip[ip] = zlib.crc32(f"{ua}\x1f{ip}".encode()) | 1 if ua or ip else 0
    return h


def prompt_bits(prompt: str | None, cache: dict | None = None) -> int | None:
    """A prompt's text signals packed in one non-negative int64 (None without a prompt).

    Bits 0-12 are the exact text's bitmap position, 13-24 the head skeleton's, 25-37 the
    tail skeleton's + 1 (0: a short prompt has no tail), 38 chain-of-thought; 39-50 and
    51-62 are 12 more bits of the head and tail skeleton hashes, so that
    :func:`skeleton_ids` gives 24-bit template ids (the campaign sketcher compares them
    across accounts, where 12 bits would collide).

    ``cache`` (the detector's own, at most :data:`TEXT_CACHE` entries): re-sent prompts are
    common and the signals cost microseconds of string work per prompt. Keys are the
    prompts' ``hash()`` (64-bit, cached on the string), not the prompts: a prompt can be up
    to 1 MB, and the cache must stay a few MB whatever tenants send. Values are plain ints,
    which the garbage collector does not track (a tuple per prompt made it scan the heap).

    >>> b = prompt_bits("Translate 12 words into French, keep the tone: bonjour mon ami")
    >>> b == prompt_bits("Translate 40 words into French, keep the tone: bonjour mon ami")
    False
    >>> skeleton_ids(b) == skeleton_ids(
    ...     prompt_bits("Translate 40 words into French, keep the tone: bonjour mon ami"))
    True
    """
    if not prompt:
        return None
    if cache is None:
        cache = {}
    key = hash(prompt)
    b = cache.get(key)
    if b is None:
        if len(cache) >= TEXT_CACHE:
            cache.clear()
        head, tail = skeletons(prompt)
        b = (exact_hash(prompt) & 0x1FFF | (head & 0xFFF) << 13 | is_cot(prompt) << 38
             | (head >> 12 & 0xFFF) << 39)
        if tail:
            b |= ((tail & 0xFFF) + 1) << 25 | (tail >> 12 & 0xFFF) << 51
        cache[key] = b
    return b


def skeleton_ids(b: int) -> tuple[int, int]:
    """The (head, tail) 24-bit skeleton ids in :func:`prompt_bits`, each + 1 (0: no tail)."""
    t = b >> 25 & 0x1FFF
    return ((b >> 13 & 0xFFF | (b >> 39 & 0xFFF) << 12) + 1,
            (t - 1 | (b >> 51 & 0xFFF) << 12) + 1 if t else 0)


CACHE_SIZE = 1 << 15
# Prompts whose signals are kept (about 100 bytes each). A week of simulated traffic has
# 86k distinct prompts in 1.1M events; at 32k entries the cache was refilled 370k times.
TEXT_CACHE = 1 << 17
_CLIENTS: dict = {}   # user agent -> address -> client_hash
_NO_CLIENTS: dict = {}


def summarise(s: TenantState, window: int = WINDOW) -> dict[str, float]:
    """Features of the current window (see module doc); resets the window counters.

    ``window``: events in a full window (:attr:`Windows.count`), for the breadth of a
    shorter one."""
    v, p = s.w_v, s.w_p
    f = dict.fromkeys(FEATURES, NAN)
    if v:
        f["nov8"] = s.w_nov8 / v
        f["nov12"] = s.w_nov12 / v
        f["nov14"] = s.w_nov14 / v
        sp8, sp6 = s.w_spread / v, s.w_spread6 / v
        if v < window:
            sp8 = min(sp8 * _distinct(256, window) * v / (_distinct(256, v) * window), 1.0)
            sp6 = min(sp6 * _distinct(64, window) * v / (_distinct(64, v) * window), 1.0)
        f["spread"] = sp8
        f["spread6"] = sp6
        if s.spread_base >= 0 and s.windows >= 2:
            f["xspread"] = max(0.0, sp6 - s.spread_base)
        s.spread_base = sp6 if s.spread_base < 0 else s.spread_base + 0.1 * (sp6 - s.spread_base)
        nov = s.w_nov14 / v
        if s.nov_base >= 0 and s.windows >= 3:
            f["xnov"] = max(0.0, nov - s.nov_base)
        if s.nov_base < 0:
            s.nov_base = nov
        elif s.windows >= 3:
            # ADWIN keeps the novelty mean since the last change it found: after a takeover it
            # tracks the new level within tens of queries, while nov_base moves slowly.
            s.drift_level = max(0.0, s.adwin.estimation - s.nov_base)
        s.nov_base += 0.1 * (nov - s.nov_base)
        f["drift"] = s.drift_level
        if s.nv >= 2:
            f["growth"] = math.log(max(s.distinct12, 1)) / math.log(s.nv)
    if p:
        f["tmpl"] = s.w_tmpl / p
        f["cot"] = s.w_cot / p
        f["newp"] = s.w_newp / p
        if v:
            f["fresh"] = s.w_fresh / p
    if s.w_tok_n:
        f["out_tok"] = min(s.w_tok / s.w_tok_n / math.log(8192.0), 1.0)
    f["newclient"] = s.w_newclient / s.w_n if s.w_n else NAN
    if v:
        f["clientnovel"] = s.w_clientnovel / v
    if s.w_dt_n >= 2:
        mean = s.w_dt / s.w_dt_n
        var = max(s.w_dt2 / s.w_dt_n - mean * mean, 0.0)
        cv = math.sqrt(var) / mean if mean > 0 else 0.0
        f["regular"] = max(0.0, 1.0 - cv)
        span_h = max(s.last_ts - s.w_first_ts, 1) / 3_600_000
        f["rate"] = min(math.log10(1.0 + s.w_n / span_h) / 5.0, 1.0)
    s.windows += 1
    s.w_n = s.w_v = s.w_p = s.w_nov8 = s.w_nov12 = s.w_nov14 = s.w_spread = 0
    s.w_spread6 = s.w_fresh = s.w_newclient = s.w_clientnovel = 0
    s.w_cells = bytearray(40)
    s.w_tmpl = s.w_cot = s.w_newp = s.w_tok_n = s.w_dt_n = 0
    s.w_tok = s.w_dt = s.w_dt2 = 0.0
    s.w_first_ts = -1
    return f


def state_bytes(s: TenantState) -> int:
    """Serialised size of one tenant's state."""
    return len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL))
