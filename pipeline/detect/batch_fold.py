"""Folding a large batch of events into the tenant states at once: numpy over the batch.

Gives exactly what :func:`pipeline.detect.fold.fold` gives event by event (same states,
cells, novelty flags, window features, in the same order of window closes), for a fixed
cost per batch and per tenant instead of ~5 µs of Python per event:

- the batch is sorted by tenant (stable), so each tenant's events are contiguous and in
  event order, and split into *segments*: the runs of one tenant within one window (by
  count, with arrays; by time, in a loop over the few tenants whose open window could
  reach its time limit within the batch);
- "first time this tenant reached this cell" is a bitmap test plus a first-occurrence test
  within the batch (``np.unique``), then the bits are set; prompt skeletons run over the
  interleaved (head, tail) sequence, as the per-event code tests them;
- window counters are per-segment sums (``np.add.reduceat``); float sums (inter-arrival
  times, log tokens) are accumulated left to right per segment with ``np.add.accumulate``,
  so they round exactly as the per-event sums do;
- the sequential leftovers stay in Python, at their own rate: each new (tenant, client)
  pair once, the ADWIN fed its novelty indicators, and the window closes, which the caller
  handles in event order with every field the summary reads set as of the closing event.

>>> import numpy as np
>>> from pipeline.contracts.events import Event
>>> from pipeline.detect.base import ScoredBatch
>>> from pipeline.detect.features import Windows, prompt_bits, summarise
>>> from pipeline.detect.fold import fold
>>> from pipeline.detect.lsh import SignProjector
>>> rng = np.random.default_rng(0)
>>> events = [Event(f"e{i}", 99_000 * i, f"t{i % 2}", prompt=f"question {i % 7}",
...                 embedding=rng.standard_normal(8), output_tokens=10) for i in range(300)]
>>> codes = SignProjector(1).codes_of([e.embedding for e in events])
>>> windows = Windows(count=50, span_ms=3_600_000, min_events=20)   # some close by time
>>> def run(batch):
...     tenants, out = {}, ScoredBatch([], [], [], [])
...     if batch:
...         closes = fold_batch_events(tenants, events, codes, windows, out, {})
...     else:
...         states = [tenants.setdefault(e.tenant_id, TenantState()) for e in events]
...         closes = fold(states, codes[0].tolist(), [prompt_bits(e.prompt) for e in events],
...                       [e.ts_ms for e in events], [10] * 300, [0] * 300, windows, out)
...     feats = [(i, summarise(s)) for i, s in closes]
...     return repr(feats), out.cells, out.novel, [tenants["t0"].minhash, tenants["t1"].w_v]
>>> run(batch=True) == run(batch=False)
True
"""
from __future__ import annotations

import math
from bisect import bisect_right
from operator import attrgetter

import numpy as np

from pipeline.detect.base import Scored, ScoredBatch
from pipeline.detect.features import (
    _CLIENTS,
    _GOLDEN,
    _NO_CLIENTS,
    ESTABLISHED,
    MAX_CLIENTS,
    MINHASH_K,
    TenantState,
    Windows,
    client_hash,
    prompt_bits,
)

# window counters summed per segment, in the column order of ``fold_batch``'s matrix
_COUNTS = ("w_n", "w_v", "w_p", "w_nov8", "w_nov12", "w_nov14", "w_spread", "w_spread6",
           "w_newclient", "w_clientnovel", "w_fresh", "w_tmpl", "w_cot", "w_newp", "w_tok_n",
           "w_dt_n")
_SUMS = ("w_tok", "w_dt", "w_dt2")
_MAX_CELLS = 4_000_000   # segments x longest segment, for the exact float sums
_get_counts, _get_sums = attrgetter(*_COUNTS), attrgetter(*_SUMS)


def _first(keys: np.ndarray) -> np.ndarray:
    """True at the first occurrence of each value of ``keys``."""
    m = np.zeros(len(keys), bool)
    m[np.unique(keys, return_index=True)[1]] = True
    return m


def _bits(rows: np.ndarray, r: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Whether bit ``i`` of row ``r`` is set (both arrays of the same length)."""
    return ((rows[r, i >> 3] >> (i & 7).astype(np.uint8)) & 1).astype(bool)


def _set(rows: np.ndarray, r: np.ndarray, i: np.ndarray) -> None:
    """Set bit ``i`` of row ``r`` (unbuffered: two bits of one byte both land)."""
    np.bitwise_or.at(rows, (r, i >> 3), np.left_shift(1, i & 7).astype(np.uint8))


def _rows(states: list, name: str) -> np.ndarray:
    """One bitmap of each state as the rows of a (writable) copy."""
    return np.frombuffer(bytearray().join([getattr(s, name) for s in states]),
                         np.uint8).reshape(len(states), -1)


def _seq_sums(seg, pos, vals, carry, nseg, maxlen) -> list[float]:
    """Per segment: carry + vals in order, summed left to right (as ``x += v`` would)."""
    if nseg * (maxlen + 1) <= _MAX_CELLS:
        m = np.zeros((nseg, maxlen + 1))
        m[:, 0] = carry
        m[seg, pos + 1] = vals
        return np.add.accumulate(m, axis=1)[:, -1].tolist()
    acc = carry.tolist()
    for g, v in zip(seg.tolist(), vals.tolist()):
        acc[g] += v
    return acc


def _feed(ad, xs) -> None:
    """ADWIN.update for each of ``xs``, in order."""
    update = ad.update
    for x in xs:
        update(x)


def fold_batch_events(tenants: dict, events: list, codes: tuple, windows: Windows,
                      out: ScoredBatch, texts: dict):
    """:func:`fold_batch` over events: states looked up (created) in ``tenants``, ``codes``
    as :meth:`~pipeline.detect.lsh.SignProjector.codes_of` gives them, prompt signals
    through the cache ``texts`` (see :func:`~pipeline.detect.features.prompt_bits`)."""
    tids = [e.tenant_id for e in events]
    where = dict.fromkeys(tids)
    uniq = []
    for j, t in enumerate(where):
        s = tenants.get(t)
        if s is None:
            s = tenants[t] = TenantState()
        where[t] = j
        uniq.append(s)
    slot = np.array(list(map(where.__getitem__, tids)), np.int64)
    get = texts.get
    prompts = [e.prompt for e in events]
    packed = [get(hash(p), -2) if p else -1 for p in prompts]
    for i, v in enumerate(packed):
        if v == -2:
            packed[i] = prompt_bits(prompts[i], texts)
    out.bits = packed
    by_ua = _CLIENTS.get
    cli = [by_ua(e.user_agent, _NO_CLIENTS).get(e.client_ip) for e in events]
    for i, v in enumerate(cli):
        if v is None:
            cli[i] = client_hash(events[i].user_agent, events[i].client_ip)
    log1p = math.log1p
    tok = np.array([None if (t := e.output_tokens) is None else log1p(t) for e in events],
                   float)
    return fold_batch(uniq, slot, codes[0], codes[1], np.array(packed, np.int64),
                      np.array([e.ts_ms for e in events], np.int64), tok,
                      np.array(cli, np.int64), windows, out)


def _windows(uniq: list, so: np.ndarray, r: np.ndarray, tso: np.ndarray, start: np.ndarray,
             last: np.ndarray, windows: Windows) -> tuple[np.ndarray, ...]:
    """Per (sorted) event: events before it in its window, its window's index within the
    batch (0: the window open before the batch) and whether it closes that window."""
    count, span, min_n = windows
    w0 = np.array([s.w_n for s in uniq], np.int64)[so] + r
    wpos, seg_local, closes = w0 % count, w0 // count, (w0 + 1) % count == 0
    # a time close needs an event span_ms after its window's first: only tenants whose
    # events (and open window) span that much are walked through, in order
    first = np.array([s.w_first_ts if s.w_n else -1 for s in uniq], np.int64)
    lo = np.minimum.reduceat(tso, start)
    lo = np.where(first >= 0, np.minimum(lo, first), lo)
    hi = np.maximum.reduceat(tso, start)
    for t in np.flatnonzero(hi - lo >= span).tolist():
        wn, w_first, k, old = uniq[t].w_n, int(first[t]), 0, uniq[t].windows
        for p in range(int(start[t]), int(last[t]) + 1):
            t_p = int(tso[p])
            if not wn:
                w_first = t_p
            wpos[p], seg_local[p] = wn, k
            wn += 1
            closes[p] = wn >= count or (wn >= min_n and t_p - w_first >= span and old + k)
            if closes[p]:
                wn, k = 0, k + 1
    return wpos, seg_local, closes


def fold_batch(uniq: list, slot: np.ndarray, code: np.ndarray, has: np.ndarray,
               packed: np.ndarray, ts: np.ndarray, log_tok: np.ndarray, cli: np.ndarray,
               windows: Windows, out: ScoredBatch):
    """:func:`pipeline.detect.fold.fold` (which see) over a batch given as arrays: per
    event its tenant's index in ``uniq``, 64-bit code (``has``: whether it has one), packed
    prompt signals (-1: no prompt), time, log1p of output tokens (NaN: none) and client hash.
    """
    n = len(slot)
    if not n:
        return
    if len(out):
        raise ValueError("fold_batch needs an empty ScoredBatch")
    # -- tenants, their order, segments ------------------------------------------------------
    k = len(uniq)
    order = np.argsort(slot, kind="stable")            # tenant by tenant, event order within
    so = slot[order]
    cnt = np.bincount(slot, minlength=k)
    start = np.cumsum(cnt) - cnt                        # each tenant's first sorted position
    last = start + cnt - 1
    r = np.arange(n) - start[so]                         # rank within the tenant's events
    tso = ts[order]
    wpos, seg_local, closes = _windows(uniq, so, r, tso, start, last, windows)
    newseg = np.ones(n, bool)
    newseg[1:] = (so[1:] != so[:-1]) | (seg_local[1:] != seg_local[:-1])
    seg = np.cumsum(newseg) - 1
    seg_start = np.flatnonzero(newseg)
    nseg = len(seg_start)
    seg_slot = so[seg_start]
    cont = seg_local[seg_start] == 0                    # continues the state's open window
    pos = np.arange(n) - seg_start[seg]
    maxlen = int(np.diff(np.append(seg_start, n)).max())

    def tcum(x: np.ndarray, field: str) -> np.ndarray:
        """Running total of ``x`` within each tenant, on top of the state's ``field``."""
        c = np.cumsum(x)
        before = c[start] - x[start]
        return np.array([getattr(s, field) for s in uniq], np.int64)[so] + c - before[so]

    # -- time, tokens, clients ---------------------------------------------------------------
    prev = np.empty(n, np.int64)
    prev[1:] = tso[:-1]
    prev[start] = np.array([s.last_ts for s in uniq], np.int64)
    has_dt = (wpos != 0) & (prev >= 0)                  # not the first event of its window
    dt = np.where(has_dt, np.maximum(tso - prev, 0), 0) / 1000.0
    log_tok = log_tok[order]
    has_tok = ~np.isnan(log_tok)
    ncum = tcum(np.ones(n, np.int64), "n")
    cli = cli[order]
    late = np.zeros(n, bool)
    hc = np.flatnonzero(cli)
    if len(hc):
        _, first, inv = np.unique(so[hc] * (1 << 32) + cli[hc], return_index=True,
                                  return_inverse=True)
        stored = np.zeros(len(first), bool)
        value = np.zeros(len(first), bool)
        for u in np.argsort(first, kind="stable").tolist():   # new clients in event order
            p = int(hc[first[u]])
            known = uniq[so[p]].clients
            v = known.get(int(cli[p]))
            if v is None:
                v = bool(ncum[p] > ESTABLISHED)
                if len(known) >= MAX_CLIENTS:
                    continue          # not remembered: each of its events is judged on its own
                known[int(cli[p])] = v
            stored[u], value[u] = True, v
        inv = inv.reshape(-1)
        late[hc] = np.where(stored[inv], value[inv], ncum[hc] > ESTABLISHED)

    # -- locality cells ----------------------------------------------------------------------
    has, code = has[order], code[order]
    hv = np.flatnonzero(has)
    sv, gv = so[hv], seg[hv]
    cv = code[hv]
    c8 = (cv & np.uint64(0xFF)).astype(np.int64)
    c12 = (cv & np.uint64(0xFFF)).astype(np.int64)
    c14 = (cv & np.uint64(0x3FFF)).astype(np.int64)
    c6 = 256 + (c8 & 0x3F)
    nov, changed = {}, {}          # changed: bitmap -> (its rows, tenants whose rows changed)
    for name, c, span in (("seen8", c8, 256), ("seen12", c12, 4096), ("seen14", c14, 16384)):
        rows = _rows(uniq, name)
        m = _first(sv * span + c) & ~_bits(rows, sv, c)
        _set(rows, sv[m], c[m])
        nov[name] = m
        changed[name] = (rows, sv[m])
    nov8, nov12, nov14 = (np.zeros(n, bool) for _ in range(3))
    nov8[hv], nov12[hv], nov14[hv] = (nov[x] for x in ("seen8", "seen12", "seen14"))
    wrows = _rows(uniq, "w_cells")
    in_cont = cont[gv]
    spread, spread6 = np.zeros(n, bool), np.zeros(n, bool)
    spread[hv] = _first(gv * 256 + c8) & ~(in_cont & _bits(wrows, sv, c8))
    spread6[hv] = _first(gv * 64 + (c8 & 0x3F)) & ~(in_cont & _bits(wrows, sv, c6))

    # -- prompts -----------------------------------------------------------------------------
    packed = packed[order]
    hp = packed >= 0
    ex, head = packed & 0x1FFF, (packed >> 13) & 0xFFF
    tail, cot = ((packed >> 25) & 0x1FFF) - 1, (packed >> 38) & 1
    hpi = np.flatnonzero(hp)
    sp = so[hpi]
    ex_rows = _rows(uniq, "ex_seen")
    m = _first(sp * 8192 + ex[hpi]) & ~_bits(ex_rows, sp, ex[hpi])
    _set(ex_rows, sp[m], ex[hpi][m])
    changed["ex_seen"] = (ex_rows, sp[m])
    new = np.zeros(n, bool)
    new[hpi] = m
    sk_rows = _rows(uniq, "sk_seen")
    seq = np.stack([head[hpi], tail[hpi]], axis=1).reshape(-1)   # head, tail, head, tail...
    seq_slot = np.repeat(sp, 2)
    ok = seq >= 0
    fresh_sk = np.zeros(len(seq), bool)
    fresh_sk[ok] = _first(seq_slot[ok] * 4096 + seq[ok]) & ~_bits(sk_rows, seq_slot[ok],
                                                                    seq[ok])
    _set(sk_rows, seq_slot[fresh_sk], seq[fresh_sk])
    changed["sk_seen"] = (sk_rows, seq_slot[fresh_sk])
    seen_sk = (ok & ~fresh_sk).reshape(-1, 2).any(axis=1)
    tmpl = np.zeros(n, bool)
    tmpl[hpi] = m & seen_sk

    # -- per-segment window counters ---------------------------------------------------------
    cols = np.stack([np.ones(n, bool), has, hp, nov8, nov12, nov14, spread, spread6, late,
                     nov14 & late, new & nov14, tmpl, hp & (cot != 0), new, has_tok, has_dt],
                    axis=1).astype(np.int64)
    seg_sum = np.add.reduceat(cols, seg_start, axis=0)
    carry = np.array([_get_counts(s) for s in uniq], np.int64)
    seg_sum[cont] += carry[seg_slot[cont]]
    seg_sum = seg_sum.tolist()
    fcarry = np.array([_get_sums(s) for s in uniq], float)[seg_slot]
    fcarry[~cont] = 0.0
    fsums = list(zip(*(_seq_sums(seg, pos, v, fcarry[:, j], nseg, maxlen)
                       for j, v in enumerate((np.where(has_tok, log_tok, 0.0), dt, dt * dt)))))
    wf0 = np.array([s.w_first_ts for s in uniq], np.int64)[seg_slot]
    seg_first = np.where(cont & (wf0 >= 0), wf0, tso[seg_start]).tolist()

    # -- outputs known before the closes -----------------------------------------------------
    cell = np.zeros(n, np.int64)
    cell[hv] = c12 + 1
    cells, novel = np.empty(n, np.int64), np.empty(n, bool)
    cells[order], novel[order] = cell, nov12
    out.cells.extend(cells.tolist())
    out.novel.extend(novel.tolist())
    cum = {f: tcum(x, f).tolist() for f, x in (("nv", has), ("npr", hp),
                                                ("distinct12", nov12))}
    ncum_l, tso_l, seg_l = ncum.tolist(), tso.tolist(), seg.tolist()
    nov_f = np.where(nov14[hv], 1.0, 0.0).tolist()       # ADWIN input, coded events in order
    new14 = np.flatnonzero(nov14[hv])                   # coded events new at 14 bits
    mh = (c14[new14].astype(np.uint64) * np.uint64(_GOLDEN)).tolist()   # their MinHash values
    new14 = new14.tolist()
    fed = np.searchsorted(sv, np.arange(k)).tolist()     # per tenant: coded events folded so far
    hv_l = hv.tolist()

    def catch_up(t: int, p: int) -> None:
        """Set tenant ``t``'s state as of its (sorted) event ``p``: all a summary reads."""
        s = uniq[t]
        s.n, s.last_ts = ncum_l[p], tso_l[p]
        s.nv, s.npr, s.distinct12 = cum["nv"][p], cum["npr"][p], cum["distinct12"][p]
        upto = bisect_right(hv_l, p)
        lo = fed[t]
        if upto > lo:
            _feed(s.adwin, nov_f[lo:upto])
            hashes = mh[bisect_right(new14, lo - 1):bisect_right(new14, upto - 1)]
            if hashes:
                s.minhash = sorted(s.minhash + hashes)[:MINHASH_K]
            fed[t] = upto
        g = seg_l[p]
        for f, v in zip(_COUNTS, seg_sum[g]):
            setattr(s, f, v)
        s.w_tok, s.w_dt, s.w_dt2 = fsums[g]
        s.w_first_ts = seg_first[g]

    # -- window closes, in event order -------------------------------------------------------
    closed_seg = np.zeros(nseg, bool)
    seg_score, seg_drift = np.zeros(nseg), np.zeros(nseg)
    pc = np.flatnonzero(closes)
    for p in pc[np.argsort(order[pc])].tolist():
        t, i = int(so[p]), int(order[p])
        s = uniq[t]
        catch_up(t, p)
        g = seg_l[p]
        closed_seg[g] = True
        seg_score[g], seg_drift[g] = s.smooth, s.drift_level
        out.special[i] = Scored(out.cells[i], out.novel[i], s.smooth, s.drift_level)
        yield i, s

    # -- the open windows, bitmaps, scores ------------------------------------------------------
    tail_open = ~closes[last]
    keep = tail_open & (seg_local[last] == 0)            # still the window open before
    final = np.where(keep[:, None], wrows, 0).astype(np.uint8)
    in_tail = (tail_open[so] & (seg == seg[last][so]))[hv]
    _set(final, sv[in_tail], c8[in_tail])
    _set(final, sv[in_tail], c6[in_tail])
    for t in np.flatnonzero(tail_open).tolist():
        catch_up(t, int(last[t]))
        uniq[t].w_cells = bytearray(final[t].tobytes())
    for name, (rw, touched) in changed.items():
        for t in np.unique(touched).tolist():
            getattr(uniq[t], name)[:] = rw[t].tobytes()
    open_seg = ~closed_seg
    seg_score[open_seg] = np.array([s.smooth for s in uniq])[seg_slot[open_seg]]
    seg_drift[open_seg] = np.array([s.drift_level for s in uniq])[seg_slot[open_seg]]
    scores, drifts = np.empty(n), np.empty(n)
    scores[order], drifts[order] = seg_score[seg], seg_drift[seg]
    out.scores.extend(scores.tolist())
    out.drifts.extend(drifts.tolist())
