"""Folding events into the tenant states, one by one, and the one place that picks how.

:func:`fold` is the reference: one Python loop, every step inlined, about 5 µs per event
whatever the batch. :func:`pipeline.detect.batch_fold.fold_batch` gives exactly the same
for a large batch with numpy (about 2 µs per event, plus a fixed cost per batch and per
tenant); :func:`fold_events` chooses between them.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

from pipeline.detect.base import Scored, ScoredBatch
from pipeline.detect.batch_fold import fold_batch_events
from pipeline.detect.features import (
    ESTABLISHED,
    MAX_CLIENTS,
    MINHASH_K,
    TenantState,
    Windows,
    _GOLDEN,
    _MASK64,
    client_hash,
    prompt_bits,
)


def observe(s: TenantState, code: int | None, prompt: str | None, ts_ms: int,
            out_tokens: int | None, client: int = 0) -> tuple[int, bool]:
    """Fold one event into the state; returns (12-bit cell + 1 or 0, novel at 12 bits).

    ``client`` is a hash of the event's client fingerprint (:func:`client_hash`), 0 if none.
    One event of :func:`fold` (which the detector runs over whole batches).
    """
    out = ScoredBatch([], [], [], [])
    for _ in fold([s], [code], [prompt_bits(prompt)], [ts_ms], [out_tokens], [client],
                  _NEVER, out):
        pass
    return out.cells[0], out.novel[0]


_NEVER = Windows(1 << 62, 1 << 62, 1 << 62)
# A batch is folded with numpy from this many events on, if its tenants have this many
# events each on average: the numpy fold costs ~1 ms per batch and tens of µs per tenant
# (its bitmaps are copied in and out), then ~2 µs per event instead of ~5.
BATCH_FOLD_MIN = 256
BATCH_FOLD_PER_TENANT = 8


def fold_events(tenants: dict, events: list, codes: tuple, windows: Windows,
                out: ScoredBatch, texts: dict) -> Iterator[tuple[int, TenantState]]:
    """:func:`fold` over a batch of events, tenant states looked up (created) in
    ``tenants``, ``codes`` as :meth:`~pipeline.detect.lsh.SignProjector.codes_of` gives
    them, prompt signals through the cache ``texts`` (see :func:`prompt_bits`).

    The one place that picks the implementation: numpy
    (:func:`pipeline.detect.batch_fold.fold_batch_events`) for large batches of busy
    tenants, this module's loop otherwise; both give identical results
    (``tests/test_core_equivalence.py``)."""
    if len(events) >= BATCH_FOLD_MIN and len(events) >= BATCH_FOLD_PER_TENANT * len(
            {e.tenant_id: None for e in events}):
        return fold_batch_events(tenants, events, codes, windows, out, texts)
    get = tenants.get
    states = []
    for e in events:
        s = get(e.tenant_id)
        if s is None:
            s = tenants[e.tenant_id] = TenantState()
        states.append(s)
    code = [c if h else None for c, h in zip(codes[0].tolist(), codes[1].tolist())]
    out.bits = [prompt_bits(e.prompt, texts) for e in events]
    return fold(states, code, out.bits,
                [e.ts_ms for e in events], [e.output_tokens for e in events],
                [client_hash(e.user_agent, e.client_ip) for e in events], windows, out)


def fold(states: list[TenantState], codes: list, bits: list, ts: list, tokens: list,
         clients: list, windows: Windows, out: ScoredBatch) -> Iterator[tuple[int, TenantState]]:
    """Fold events in, in order, appending what the detector says of each to ``out``.

    Per event: its tenant's state, 64-bit code (None without a vector),
    :func:`prompt_bits`, time, output tokens and :func:`client_hash`. Yields ``(i, state)``
    as soon as event ``i`` closes its tenant's window (:class:`Windows`), with ``out.special[i]`` a
    :class:`Scored` for it: the caller summarises the window (and may update the state and
    that Scored) before the next event is folded in.
    Everything is inlined in one loop: this runs for every event.
    """
    log1p = math.log1p
    window, span, min_n = windows
    cells, novels, scores, drifts = out.cells, out.novel, out.scores, out.drifts
    for i, (s, code, b, t, tok, client) in enumerate(zip(states, codes, bits, ts, tokens,
                                                         clients)):
        n = s.n = s.n + 1
        w_n = s.w_n = s.w_n + 1
        late = False
        if client:
            cl = s.clients
            late = cl.get(client)
            if late is None:
                late = n > ESTABLISHED
                if len(cl) < MAX_CLIENTS:
                    cl[client] = late
            if late:
                s.w_newclient += 1
        if s.w_first_ts < 0:
            s.w_first_ts = t
        elif s.last_ts >= 0:
            dt = max(t - s.last_ts, 0) / 1000.0
            s.w_dt_n += 1
            s.w_dt += dt
            s.w_dt2 += dt * dt
        s.last_ts = t
        if tok is not None:
            s.w_tok_n += 1
            s.w_tok += log1p(tok)
        cell, novel, novel14 = 0, False, False
        if code is not None:
            s.nv += 1
            s.w_v += 1
            c = code & 0xFF
            bm, j, bit = s.seen8, c >> 3, 1 << (c & 7)
            if not bm[j] & bit:
                bm[j] |= bit
                s.w_nov8 += 1
            c = code & 0xFFF
            cell = c + 1
            bm, j, bit = s.seen12, c >> 3, 1 << (c & 7)
            if not bm[j] & bit:
                bm[j] |= bit
                novel = True
                s.w_nov12 += 1
                s.distinct12 += 1
            c = code & 0x3FFF
            bm, j, bit = s.seen14, c >> 3, 1 << (c & 7)
            novel14 = not bm[j] & bit
            s.adwin.update(1.0 if novel14 else 0.0)
            if novel14:
                bm[j] |= bit
                s.w_nov14 += 1
                if late:
                    s.w_clientnovel += 1
                h = (c * _GOLDEN) & _MASK64
                mh = s.minhash
                if len(mh) < MINHASH_K:
                    mh.append(h)
                    mh.sort()
                elif h < mh[-1]:
                    mh[-1] = h
                    mh.sort()
            c = code & 0xFF
            bm, j, bit = s.w_cells, c >> 3, 1 << (c & 7)
            if not bm[j] & bit:
                bm[j] |= bit
                s.w_spread += 1
                c = 256 + (code & 0x3F)
                j, bit = c >> 3, 1 << (c & 7)
                if not bm[j] & bit:
                    bm[j] |= bit
                    s.w_spread6 += 1
        if b is not None:
            s.npr += 1
            s.w_p += 1
            if b >> 38 & 1:
                s.w_cot += 1
            bm, c = s.ex_seen, b & 0x1FFF
            j, bit = c >> 3, 1 << (c & 7)
            new = not bm[j] & bit
            if new:
                bm[j] |= bit
            bm, c = s.sk_seen, (b >> 13) & 0xFFF
            j, bit = c >> 3, 1 << (c & 7)
            seen = bm[j] & bit
            if not seen:
                bm[j] |= bit
            c = ((b >> 25) & 0x1FFF) - 1
            if c >= 0:
                j, bit = c >> 3, 1 << (c & 7)
                if bm[j] & bit:
                    seen = True
                else:
                    bm[j] |= bit
            if new:
                if novel14:
                    s.w_fresh += 1
                s.w_newp += 1
                if seen:
                    s.w_tmpl += 1
        cells.append(cell)
        novels.append(novel)
        scores.append(s.smooth)
        drifts.append(s.drift_level)
        if w_n >= window or (w_n >= min_n and t - s.w_first_ts >= span and s.windows):
            out.special[i] = Scored(cell, novel, s.smooth, s.drift_level)
            yield i, s
