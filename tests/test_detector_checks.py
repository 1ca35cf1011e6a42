"""One check suite run on every detector class (River's ``check_estimator`` idea).

Each detector (ours and every baseline of :data:`pipeline.bench.baselines.BASELINES`) is
driven over the same small seeded stream (a few focused tenants, one sweeper, some events
with text only or no vector at all) and must: pickle and clone, give identical output for
identical input and seed, leave its input events untouched, give identical subsequent
output after a dump/load round trip of every tenant, keep tenants independent, and keep
per-tenant state under 16 KB (ours; PRADA keeps every query by design). The campaign
sketcher and stage have other APIs and get checks of their own at the end.
"""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from pipeline.contracts.events import Event
from pipeline.detect.burst import BurstDetector
from pipeline.detect.coverwatch import CoverwatchDetector

T0 = 1_767_225_600_000
MAX_TENANT_BYTES = 16_384


def _calibration() -> list[Event]:
    return stream(600, seed=5)


def _baseline(cls):
    def make():
        return cls.calibrate(_calibration(), target_fpr=0.25)
    return make


def _factories():
    from pipeline.bench.baselines import BASELINES   # fails loudly if the name moves
    assert set(BASELINES) >= {"volume", "prada", "coverage", "mmd"}, BASELINES
    out = [
        pytest.param(lambda: CoverwatchDetector(window=10, min_windows=5, seed=3),
                     id="coverwatch"),
        pytest.param(lambda: BurstDetector(min_events=20, ratio=3.0), id="burst"),
    ]
    for name, cls in sorted(BASELINES.items()):
        out.append(pytest.param(_baseline(cls), id=name))
    return out


FACTORIES = _factories()


def test_the_suite_covers_every_detector_and_baseline():
    """Every name the worker can run and every baseline the benchmark runs gets the checks:
    a new detector, or a renamed registry, fails here instead of going unchecked."""
    from pipeline.bench.baselines import BASELINES
    from pipeline.process import DETECTORS
    assert sorted(p.id for p in FACTORIES) == sorted([*DETECTORS, *BASELINES])


def stream(n: int = 1500, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((6, 24)).astype(np.float32)
    events = []
    for i in range(n):
        t = int(rng.integers(0, 5))
        tenant = f"t{t}"
        if t == 4:                       # a sweeper: everything new, templated prompts
            v = rng.standard_normal(24).astype(np.float32)
            prompt = f"Explain step by step: item {i} of the catalogue"
        else:
            v = topics[t] + 0.1 * rng.standard_normal(24).astype(np.float32)
            prompt = ["How do I reset my password?", "Where is my order?",
                      "Cancel my plan"][int(rng.integers(0, 3))]
        kind = i % 7
        events.append(Event(
            f"e{i}", T0 + i * 500 + int(rng.integers(0, 400)), tenant,
            prompt=None if kind == 5 else prompt,
            embedding=None if kind in (3, 5) else v,
            output_tokens=int(rng.integers(10, 500)) if kind != 2 else None))
    return events


def run(det, events) -> list[tuple]:
    out = []
    for s in det.update_many(events):
        out.append((s.cell, s.novel, round(s.score, 9), round(s.drift, 9),
                    [(a.alert_id, a.severity, a.detector, a.events_seen,
                      a.evidence["summary"]) for a in s.alerts]))
    return out


@pytest.mark.parametrize("factory", FACTORIES)
def test_pickle_and_clone(factory):
    det = factory()
    run(det, stream(300))
    again = pickle.loads(pickle.dumps(det))
    rest = stream(600, seed=1)
    assert run(again, rest) == run(det, rest)
    if hasattr(det, "clone"):
        fresh = det.clone()
        assert repr(fresh) == repr(factory())


@pytest.mark.parametrize("factory", FACTORIES)
def test_same_seed_same_result(factory):
    events = stream()
    assert run(factory(), events) == run(factory(), events)


@pytest.mark.parametrize("factory", FACTORIES)
def test_update_and_update_many_agree(factory):
    events = stream(800)
    one = factory()
    singles = [one.update(e) for e in events]
    many = factory().update_many(events)
    assert [(s.cell, s.novel, s.score, [a.alert_id for a in s.alerts]) for s in singles] == \
           [(s.cell, s.novel, s.score, [a.alert_id for a in s.alerts]) for s in many]


@pytest.mark.parametrize("factory", FACTORIES)
def test_input_not_mutated(factory):
    events = stream(500)
    before = copy.deepcopy(events)
    run(factory(), events)
    for a, b in zip(events, before):
        assert a.to_dict() == b.to_dict()
        if a.embedding is not None:
            assert a.embedding.dtype == b.embedding.dtype


@pytest.mark.parametrize("factory", FACTORIES)
def test_dump_load_round_trip(factory):
    events = stream(1200)
    head, tail = events[:700], events[700:]
    det = factory()
    run(det, head)
    tenants = sorted({e.tenant_id for e in head})
    states = {t: det.dump_tenant(t) for t in tenants}
    assert det.dump_tenant("never-seen") is None
    restored = factory()
    if hasattr(det, "dump_population"):
        restored.load_population(det.dump_population())
    for t, b in states.items():
        restored.load_tenant(t, b)
    assert run(restored, tail) == run(det, tail)


UNBOUNDED = {"prada"}   # PRADA keeps every query of an account (the paper's algorithm)


@pytest.mark.parametrize("factory", FACTORIES)
def test_bounded_tenant_memory(factory, request):
    if request.node.callspec.id in UNBOUNDED:
        pytest.skip("this baseline's state grows with the account by design")
    det = factory()
    run(det, stream(4000))
    sizes = [len(det.dump_tenant(f"t{t}")) for t in range(5)]
    assert max(sizes) < MAX_TENANT_BYTES, sizes


@pytest.mark.parametrize("factory", FACTORIES)
def test_events_without_vectors_or_text(factory):
    det = factory()
    out = det.update_many([Event(f"m{i}", T0 + i * 1000, "meta-only") for i in range(200)])
    assert len(out) == 200 and all(s.cell == 0 for s in out)


@pytest.mark.parametrize("factory", FACTORIES)
def test_alerts_at_all(factory):
    """The checks above compare alerts too: each detector must raise some on this stream."""
    assert any(alerts for *_, alerts in run(factory(), stream()))


@pytest.mark.parametrize("factory", FACTORIES)
def test_other_tenants_do_not_touch_a_tenants_state(factory):
    events = stream(1200)
    det = factory()
    run(det, events[:600])
    before = det.dump_tenant("t4")
    run(det, [e for e in events[600:] if e.tenant_id != "t4"])
    assert det.dump_tenant("t4") == before
    assert det.dump_tenant("t4-never") is None


@pytest.mark.parametrize("factory", FACTORIES)
def test_clone_is_independent(factory):
    det = factory()
    run(det, stream(600))
    if not hasattr(det, "clone"):
        twin = copy.deepcopy(det)
    else:
        twin = det.clone()
        assert all(twin.dump_tenant(f"t{t}") is None for t in range(5))   # fresh
        if hasattr(det, "dump_population"):
            twin.load_population(det.dump_population())
        for t in range(5):
            twin.load_tenant(f"t{t}", det.dump_tenant(f"t{t}"))
    states = {t: det.dump_tenant(f"t{t}") for t in range(5)}
    rest = stream(600, seed=2)
    run(twin, rest)                                      # teach the twin only
    assert {t: det.dump_tenant(f"t{t}") for t in range(5)} == states
    ref = factory()                                      # never cloned
    run(ref, stream(600))
    assert run(det, rest) == run(ref, rest)


# ---- the campaign sketcher and stage (account summaries; one global stage) -----------------

from pipeline.campaigns import AccountSketcher, CampaignStage  # noqa: E402
from pipeline.detect.base import Scored  # noqa: E402


def campaign_stream(seed: int = 0):
    """Apps re-asking their own few topics, and one sweep split over 6 new accounts on one
    operator's client after the stage's first day (the stage's own doctest, as events and
    the cells a detector gave them)."""
    rng = np.random.default_rng(seed)
    evs, cells = [], []
    for j in range(40):
        topic = rng.integers(1, 4000, 8)
        for i in range(100):
            evs.append(Event(f"a{j}-{i}", T0 + 600_000 * i, f"app{j}",
                             prompt=f"how do I {i % 5}", output_tokens=300))
            cells.append(int(rng.choice(topic)))
    sweep = rng.permutation(np.arange(1, 4097))
    for j in range(6):
        for i in range(100):
            evs.append(Event(f"h{j}-{i}", T0 + 3_600_000 * (30 + j) + 30_000 * i, f"h{j}",
                             model="big", endpoint="/chat", prompt=f"Explain item {j}-{i}",
                             output_tokens=1500, user_agent="python-requests/2.32",
                             client_ip=f"198.51.100.{j + 1}"))
            cells.append(int(sweep[100 * j + i]))
    order = np.argsort([e.ts_ms for e in evs], kind="stable")
    return [evs[i] for i in order], [Scored(cell=cells[i]) for i in order]


def sketch(sk, events, scored, step=97):
    out = []
    for i in range(0, len(events), step):
        sk.observe_batch(events[i:i + step], scored[i:i + step])
        out += sk.drain()
    return out


def alert_keys(alerts):
    return [(a.alert_id, a.tenant_id, a.events_seen, tuple(a.related_tenants),
             a.evidence["summary"]) for a in alerts]


def test_sketcher_is_deterministic_and_round_trips():
    events, scored = campaign_stream()
    half = len(events) // 2
    a, b = AccountSketcher(seed=3), AccountSketcher(seed=3)
    assert sketch(a, events, scored) == sketch(b, events, scored)
    assert sketch(AccountSketcher(seed=3), events, scored)   # summaries at all

    whole = AccountSketcher(seed=3)
    sketch(whole, events[:half], scored[:half])
    restored = AccountSketcher(seed=3)
    for t in {e.tenant_id for e in events[:half]}:
        restored.load_tenant(t, whole.dump_tenant(t))
    rest = (events[half:], scored[half:])
    pickled = pickle.loads(pickle.dumps(whole))
    expected = sketch(whole, *rest)
    assert expected and sketch(restored, *rest) == expected
    assert sketch(pickled, *rest) == expected


def test_sketcher_keeps_accounts_apart_and_copies_independent():
    events, scored = campaign_stream()
    sk = AccountSketcher(seed=3)
    half = len(events) // 2
    sketch(sk, events[:half], scored[:half])
    before = sk.dump_tenant("app0")
    other = [(e, s) for e, s in zip(events[half:], scored[half:]) if e.tenant_id != "app0"]
    sketch(sk, [e for e, _ in other], [s for _, s in other])
    assert sk.dump_tenant("app0") == before
    twin = copy.deepcopy(sk)
    sketch(twin, events[half:], scored[half:])
    assert sk.dump_tenant("app0") == before
    with pytest.raises(ValueError):
        AccountSketcher(seed=3, n_hashes=32).load_tenant("app0", before)


def test_stage_is_deterministic_and_round_trips():
    events, scored = campaign_stream()
    summaries = sketch(AccountSketcher(seed=3), events, scored)

    def stage():
        return CampaignStage(warmup=20, min_members=3, seed=3)
    full = stage().update_many(summaries)
    assert full, "the stream holds a campaign: the stage must name it"
    assert alert_keys(stage().update_many(summaries)) == alert_keys(full)

    cut = next(i for i, s in enumerate(summaries) if s["account"].startswith("h"))
    whole = stage()
    head = whole.update_many(summaries[:cut + 2])
    restored = stage()
    restored.load(whole.dump())
    tail = summaries[cut + 2:]
    assert alert_keys(head + restored.update_many(tail)) == alert_keys(full)
    assert alert_keys(whole.update_many(tail)) == alert_keys(full[len(head):])
    with pytest.raises(ValueError):
        stage().load(pickle.dumps({"kind": "something else"}))


def test_stage_instances_share_nothing():
    events, scored = campaign_stream()
    summaries = sketch(AccountSketcher(seed=3), events, scored)
    busy = CampaignStage(warmup=20, min_members=3, seed=3)
    busy.update_many(summaries)
    fresh = CampaignStage(warmup=20, min_members=3, seed=3)
    assert fresh.groups == 0 and fresh.campaigns() == [] and fresh.summaries == 0
    dump, camps = busy.dump(), busy.campaigns()
    clone = copy.deepcopy(busy)
    clone.update_many(sketch(AccountSketcher(seed=3), *campaign_stream(seed=1)))
    assert clone.summaries > busy.summaries
    assert busy.dump() == dump and busy.campaigns() == camps
