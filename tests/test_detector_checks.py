"""One check suite run on every detector class (River's ``check_estimator`` idea).

Each detector is driven over the same small seeded stream (a few focused tenants, one
sweeper, some events with text only or no vector at all) and must: pickle and clone,
give identical output for identical input and seed, leave its input events untouched,
give identical subsequent output after a dump/load round trip of every tenant, and keep
per-tenant state under 16 KB.
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


def _factories():
    out = [
        pytest.param(lambda: CoverwatchDetector(window=10, min_windows=5, seed=3),
                     id="coverwatch"),
        pytest.param(lambda: BurstDetector(min_events=20, ratio=3.0), id="burst"),
    ]
    try:  # the baselines arrive with the benchmark issue
        from pipeline.bench import baselines  # noqa: F401
        for name in getattr(baselines, "DETECTORS", {}):
            out.append(pytest.param(baselines.DETECTORS[name], id=name))
    except ImportError:
        pass
    return out


FACTORIES = _factories()


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


@pytest.mark.parametrize("factory", FACTORIES)
def test_bounded_tenant_memory(factory):
    det = factory()
    run(det, stream(4000))
    sizes = [len(det.dump_tenant(f"t{t}")) for t in range(5)]
    assert max(sizes) < MAX_TENANT_BYTES, sizes


@pytest.mark.parametrize("factory", FACTORIES)
def test_events_without_vectors_or_text(factory):
    det = factory()
    out = det.update_many([Event(f"m{i}", T0 + i * 1000, "meta-only") for i in range(200)])
    assert len(out) == 200 and all(s.cell == 0 for s in out)
