"""The detector core's per-event path is pinned: cells, novelty flags and window features.

The golden digest was computed with the per-event implementation this fast path replaced
(commit 110f8a2) and recomputed, with both paths agreeing, when the content-drift features
(``cdrift``, ``xspread``, ``rare``) and the novelty excess (``xnov``) were added, both
paths agreeing each time; any change to what the per-tenant state computes
changes it. Scores and
alerts are left out on purpose: they depend on the alert rules, which are tuned separately.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import orjson
import pytest

from pipeline.contracts.events import Event
from pipeline.detect import fold
from pipeline.detect.coverwatch import CoverwatchDetector
from pipeline.process import Processor

GOLDEN = "a391b8c01a4e7290d81417ac914ba71e5f6ab32f8ea99fc00ad72da0cb4f3cd8"
T0 = 1_767_225_600_000


def stream(n: int = 6000, seed: int = 3, gap_ms: int = 3000) -> list[Event]:
    """Mixed traffic: repeated and templated prompts, chain-of-thought, missing fields,
    out-of-order times, two vector dimensions, many clients (beyond the per-tenant cap);
    ``gap_ms`` bounds the time between events (60 s: windows close by time)."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((30, 32)).astype(np.float32)
    prompts = ([f"Explain step by step: topic {i}" for i in range(40)]
               + [f"Q{i}: what is {i} + {i * 7}? " * int(rng.integers(1, 8)) for i in range(200)]
               + ["", "x", "İstanbul 12 ÇAĞ ünïcödé " * 3, "Show your work " * 40,
                  "a" * 700 + " let's think " + "b" * 700])
    uas = [None, "curl/8", "python-requests/2", "Mozilla/5.0"]
    ips = [None] + [f"10.0.{i}.{j}" for i in range(6) for j in range(8)]
    out, ts = [], T0
    for i in range(n):
        tenant = f"t{int(rng.integers(0, 30))}" if rng.random() < 0.97 else f"rare{i}"
        ts += int(rng.integers(-500, gap_ms))
        r = rng.random()
        emb = None if r < 0.1 else (topics[rng.integers(0, 30)]
                                    + 0.3 * rng.standard_normal(32)).astype(np.float32)
        if 0.1 <= r < 0.12:
            emb = rng.standard_normal(16).astype(np.float32)
        prompt = None if rng.random() < 0.1 else prompts[int(rng.integers(0, len(prompts)))]
        tok = None if rng.random() < 0.15 else int(rng.integers(0, 9000))
        ip = ips[int(rng.integers(0, len(ips)))] if rng.random() < 0.9 else f"172.16.{i % 90}.1"
        out.append(Event(f"e{i}", ts, tenant, prompt=prompt, embedding=emb, output_tokens=tok,
                         user_agent=uas[int(rng.integers(0, 4))], client_ip=ip))
    return out


def _num(x):
    return "nan" if isinstance(x, float) and math.isnan(x) else (
        float(x).hex() if isinstance(x, float) else x)


def core_outputs(scored) -> list:
    out = []
    for s in scored:
        row = [s.cell, bool(s.novel), _num(s.drift)]
        if s.summary is not None:
            f = s.summary["features"]
            row += [s.summary["tenant_id"], s.summary["events_seen"], s.summary["window"],
                    s.summary["cells_minhash"], [(k, _num(f[k])) for k in sorted(f) if k != "hst"]]
        out.append(row)
    return out


def digest(rows) -> str:
    return hashlib.sha256(orjson.dumps(rows)).hexdigest()


@pytest.mark.parametrize("numpy_fold", [True, False])
def test_per_event_path_matches_the_reference_implementation(numpy_fold, monkeypatch):
    calls = []
    numpy = fold.fold_batch_events
    monkeypatch.setattr(fold, "fold_batch_events", lambda *a: calls.append(1) or numpy(*a))
    if not numpy_fold:
        monkeypatch.setattr(fold, "BATCH_FOLD_MIN", 10**9)
    events = stream()
    det = CoverwatchDetector()
    scored = []
    for i in range(0, len(events), 997):
        scored += det.update_many(events[i:i + 997])
    assert bool(calls) == numpy_fold
    assert digest(core_outputs(scored)) == GOLDEN


@pytest.mark.parametrize("gap_ms", [3000, 60_000])
def test_batching_does_not_change_anything(gap_ms):
    """One event at a time (the loop) and batches of 512 (numpy) agree, also when windows
    close by time (``gap_ms`` 60 s: a tenant's window spans 6 h after about 24 events)."""
    events = stream(3000, seed=5, gap_ms=gap_ms)
    a, b = CoverwatchDetector(), CoverwatchDetector()
    one = [a.update(e) for e in events]
    many = [s for i in range(0, len(events), 512) for s in b.update_many(events[i:i + 512])]
    key = lambda s: (s.cell, s.novel, s.score, s.drift, s.summary and orjson.dumps(
        s.summary, option=orjson.OPT_SERIALIZE_NUMPY), [x.alert_id for x in s.alerts])
    assert [key(s) for s in one] == [key(s) for s in many]
    prev, sizes = {}, []
    for s in many:
        if s.summary is not None:
            t, n = s.summary["tenant_id"], s.summary["events_seen"]
            sizes.append(n - prev.get(t, 0))
            prev[t] = n
    # count windows only at 3 s; mostly time windows of 30-49 events at 60 s
    short = sum(1 for k in sizes if k < 50)
    assert sizes and min(sizes) >= 30
    assert (short > len(sizes) // 2) == (gap_ms == 60_000)
    assert all(a.dump_tenant(t) == b.dump_tenant(t) for t in a._tenants)


def test_embedding_cache_gives_the_embedders_own_vectors():
    from pipeline.embed.hashing import HashingEmbedder
    emb = HashingEmbedder(dim=64)
    texts = [f"question {i % 37} about topic {i % 11}" for i in range(400)]
    p = Processor(CoverwatchDetector(), emb, vector_cache=16)
    events = [Event(f"e{i}", T0 + i, f"t{i % 3}", prompt=t) for i, t in enumerate(texts)]
    for i in range(0, len(events), 50):
        p.process(events[i:i + 50])
    assert len(p._vectors) <= 16
    assert np.array_equal(np.stack([e.embedding for e in events]), emb.embed(texts))
