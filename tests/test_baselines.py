"""Baselines: each flags an obvious broad sweep and leaves a focused, repeating app alone."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipeline.bench.baselines import BASELINES, MMDBaseline, PradaBaseline, VolumeBaseline
from pipeline.contracts.events import Event
from pipeline.simulate import content
from pipeline.simulate.corpus import corpus_available
from pipeline.simulate.pool import build_pool

T0 = 1_772_409_600_000
corpus = pytest.mark.skipif(not corpus_available(), reason="prompt corpus absent")


def _events(pool, tenant: str, rows: np.ndarray, gap_ms: int, start: int = 0) -> list[Event]:
    vecs = pool.embeddings[rows].astype(np.float32)
    return [Event(f"{tenant}-{i}", T0 + start + i * gap_ms, tenant, embedding=v,
                  prompt=pool.texts[r]) for i, (r, v) in enumerate(zip(rows, vecs))]


def _benign_calibration(pool, rng, n_tenants: int = 24, n: int = 500) -> list[Event]:
    """Focused apps and chat users on calib prompts, interleaved in time."""
    events = []
    cats = pool.cats(min_rows=30, exclude_kinds=("adversarial",))
    for t in range(n_tenants):
        pick = [int(c) for c in rng.choice(cats, size=int(rng.integers(1, 4)), replace=False)]
        if t % 3 == 0:      # chat-like: many topics, mostly new
            pick = [int(c) for c in rng.choice(cats, size=15, replace=False)]
            rows = content.broad_mix(rng, pool, pick, rng.dirichlet(np.ones(15)), n)
        else:
            rows = content.working_set(rng, pool, pick, n, p_new=0.1)
        events += _events(pool, f"cal{t}", rows, gap_ms=int(rng.integers(60_000, 300_000)))
    return sorted(events, key=lambda e: e.ts_ms)


def _run(det, events) -> dict[str, int]:
    seen: dict[str, int] = {}
    first: dict[str, int] = {}
    for e in events:
        seen[e.tenant_id] = seen.get(e.tenant_id, 0) + 1
        for a in det.update(e).alerts:
            first.setdefault(a.tenant_id, seen[a.tenant_id])
    return first


@pytest.fixture(scope="module")
def calibrated():
    if not corpus_available():
        pytest.skip("prompt corpus absent")
    rng = np.random.default_rng(7)
    events = _benign_calibration(build_pool("calib"), rng)
    return {name: cls.calibrate(events, target_fpr=0.02) for name, cls in BASELINES.items()}


@pytest.fixture(scope="module")
def report_streams():
    if not corpus_available():
        pytest.skip("prompt corpus absent")
    pool = build_pool("report")
    rng = np.random.default_rng(11)
    cats = pool.cats()
    sweep = content.Sweep(rng, pool, cats, content.sqrt_weights(pool, cats)).take(3000)
    focused_cats = [c for c in pool.cats(("exam",), min_rows=200)][:2]
    focused = content.working_set(rng, pool, focused_cats, 1500, p_new=0.05, initial=80)
    return {"sweeper": _events(pool, "sweeper", sweep, gap_ms=2_000),          # 43k a day
            "app": _events(pool, "app", focused, gap_ms=300_000)}              # 288 a day


@corpus
@pytest.mark.corpus
@pytest.mark.parametrize("name", ["volume", "coverage"])
def test_flags_broad_sweep_not_focused_app(name, calibrated, report_streams):
    det = calibrated[name]
    events = sorted(report_streams["sweeper"] + report_streams["app"], key=lambda e: e.ts_ms)
    first = _run(det, events)
    assert "sweeper" in first
    assert "app" not in first


@corpus
@pytest.mark.corpus
def test_prada_flags_synthetic_walk_not_natural_app(calibrated, report_streams):
    """PRADA looks for non-normal distance distributions: small synthetic steps around seed
    queries (the JbDA-style attack it was built for)."""
    det = calibrated["prada"]
    pool = build_pool("report")
    rng = np.random.default_rng(3)
    base = pool.embeddings[rng.choice(len(pool), 40)].astype(np.float32)
    walk = np.concatenate([b + 0.01 * rng.standard_normal((25, b.size)).astype(np.float32)
                           for b in base])
    synth = [Event(f"s{i}", T0 + i * 2000, "synth", embedding=v / np.linalg.norm(v))
             for i, v in enumerate(walk)]
    first = _run(det, sorted(synth + report_streams["app"], key=lambda e: e.ts_ms))
    assert "synth" in first
    assert "app" not in first


@corpus
@pytest.mark.corpus
def test_prada_sees_a_natural_prompt_sweep_as_benign(calibrated, report_streams):
    """Documented limitation (why PRADA scores ~0 in the benchmark): a sweep of *natural*
    prompts has more normal nearest-neighbour distances than an app that re-asks."""
    det = calibrated["prada"]
    events = sorted(report_streams["sweeper"] + report_streams["app"], key=lambda e: e.ts_ms)
    for e in events:
        det.update(e)
    assert det._extreme["sweeper"] > det._extreme["app"]
    assert "sweeper" not in det._flagged


@corpus
@pytest.mark.corpus
def test_mmd_flags_sweep_when_benign_traffic_is_homogeneous(report_streams):
    """The paper's setting: benign reference and benign windows from one population (chat
    users on the same prompt mix); a broad sweep is off that distribution."""
    pool = build_pool("report")
    rng = np.random.default_rng(5)
    chat = pool.cats(("chat",), min_rows=20)
    users = [content.broad_mix(rng, pool, chat, np.ones(len(chat)), 640) for _ in range(13)]
    benign = [e for u, rows in enumerate(users[:12])
              for e in _events(pool, f"u{u}", rows, gap_ms=60_000)]
    det = MMDBaseline.calibrate(sorted(benign, key=lambda e: e.ts_ms))
    held_out = _events(pool, "chat_user", users[12], gap_ms=60_000)
    first = _run(det, sorted(report_streams["sweeper"][:640] + held_out, key=lambda e: e.ts_ms))
    assert "sweeper" in first and "chat_user" not in first


@corpus
@pytest.mark.corpus
def test_mmd_misses_broad_sweep_when_benign_tenants_are_focused(calibrated, report_streams):
    """Documented limitation (why MMD scores ~0 in the benchmark): per-account windows of
    focused apps are far from the pooled benign reference, so the calibrated threshold sits
    above anything a broad, reference-like sweep produces."""
    det = calibrated["mmd"]
    first = _run(det, report_streams["sweeper"])
    assert "sweeper" not in first


def test_volume_rate_limit_without_corpus():
    det = VolumeBaseline(per_hour=100, per_day=1_000)
    quiet = [Event(f"q{i}", T0 + i * 600_000, "quiet") for i in range(200)]
    loud = [Event(f"l{i}", T0 + i * 1_000, "loud") for i in range(500)]
    first = _run(det, sorted(quiet + loud, key=lambda e: e.ts_ms))
    assert first == {"loud": 101}


def test_mmd_is_zero_mean_on_reference_like_windows():
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((3000, 32)).astype(np.float32)
    events = [Event(f"e{i}", T0 + i, f"t{i % 10}", embedding=v) for i, v in enumerate(vecs)]
    det = MMDBaseline.calibrate(events, window=32, reference=256)
    same = det.mmd2(rng.standard_normal((32, 32)).astype(np.float32))
    shifted = det.mmd2((rng.standard_normal((32, 32)) + 2.0).astype(np.float32))
    assert abs(same) < det.threshold < shifted


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_protocol_and_state_round_trip(name):
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((800, 16)).astype(np.float32)
    events = [Event(f"e{i}", T0 + i * 1000, f"t{i % 4}", embedding=v) for i, v in enumerate(vecs)]
    det = BASELINES[name].calibrate(events, target_fpr=0.25)
    for e in events[:200]:
        scored = det.update(e)
        assert isinstance(scored.alerts, list)
    blob = det.dump_tenant("t1")
    assert blob is not None and det.dump_tenant("nobody") is None
    # a fresh calibrated copy with t1's state continues exactly as the original does
    restored = BASELINES[name].calibrate(events, target_fpr=0.25)
    restored.load_tenant("t1", blob)
    mine = [e for e in events[200:] if e.tenant_id == "t1"]

    def out(d):
        return [(s.score, [(a.alert_id, a.events_seen) for a in s.alerts])
                for s in (d.update(e) for e in mine)]
    want = out(det)
    assert out(restored) == want
    # and the same events on a tenant that starts fresh give other numbers: the state
    # carried something (a round trip of an empty state would pass the check above)
    assert out(BASELINES[name].calibrate(events, target_fpr=0.25)) != want


def test_prada_rejects_bad_arguments():
    with pytest.raises(ValueError):
        PradaBaseline(min_queries=1)
