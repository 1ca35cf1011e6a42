"""Each per-tenant signal separates an extraction sweep from a focused workload.

The ``corpus`` tests use real prompts (texts and MiniLM vectors from ../shared/data/prompts);
the others use seeded synthetic vectors and run anywhere.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.detect.features import TenantState, summarise
from pipeline.detect.fold import observe
from pipeline.detect.lsh import SignProjector, hamming
from pipeline.detect.text_signals import is_cot, skeletons
from pipeline.simulate.corpus import corpus_available

T0 = 1_767_225_600_000
WINDOW = 50


def windows(vectors, prompts=None, tokens=None, gap_ms=1000):
    """Run one tenant's stream through the per-tenant state; feature dicts per window."""
    proj, s, out = SignProjector(seed=0), TenantState(), []
    codes = proj.codes(np.asarray(vectors, np.float32)).tolist()
    for i, c in enumerate(codes):
        observe(s, c, None if prompts is None else prompts[i], T0 + i * gap_ms,
                None if tokens is None else tokens[i])
        if s.w_n == WINDOW:
            out.append(summarise(s))
    return out


def mean(ws, feature, skip=2):
    return float(np.mean([w[feature] for w in ws[skip:]]))


# ---- corpus-free --------------------------------------------------------------------------

def test_sign_codes_are_deterministic_and_scale_free():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 32)).astype(np.float32)
    a, b = SignProjector(3).codes(x), SignProjector(3).codes(3.0 * x)
    assert a.tolist() == b.tolist()
    assert SignProjector(4).codes(x).tolist() != a.tolist()
    # nearby vectors share most bits, opposite vectors none
    near = SignProjector(3).codes(x + 0.01 * rng.standard_normal(x.shape).astype(np.float32))
    assert all(hamming(int(p), int(q)) <= 4 for p, q in zip(a, near))


def test_synthetic_sweep_vs_focused_coverage():
    rng = np.random.default_rng(1)
    topics = rng.standard_normal((5, 64))
    focused = topics[rng.integers(0, 5, 600)] + 0.05 * rng.standard_normal((600, 64))
    sweep = rng.standard_normal((600, 64))
    f, s = windows(focused), windows(sweep)
    for feat in ("nov8", "nov12", "nov14", "spread", "growth"):
        assert mean(s, feat) > mean(f, feat) + 0.2, feat


def test_drift_rises_after_takeover_and_not_without():
    rng = np.random.default_rng(2)
    topics = rng.standard_normal((4, 64))
    calm = topics[rng.integers(0, 4, 1500)] + 0.05 * rng.standard_normal((1500, 64))
    taken = calm.copy()
    taken[1000:] = rng.standard_normal((500, 64))
    before, after = windows(calm), windows(taken)
    assert max(w["drift"] for w in before) < 0.1
    assert max(w["drift"] for w in after[20:]) > 0.4


def test_text_signals():
    assert is_cot("Solve this. Show your work.")
    assert not is_cot("Translate 'step' into French")
    a = skeletons("Reason carefully about the following task: 12 apples")
    b = skeletons("Reason carefully about the following task: a dog")
    assert a[0] == b[0]
    assert skeletons("short")[1] == 0


def test_events_without_vectors_have_no_coverage_features():
    s = TenantState()
    for i in range(WINDOW):
        assert observe(s, None, "hello", T0 + i, 10) == (0, False)
    f = summarise(s)
    assert np.isnan(f["nov12"]) and f["newp"] == pytest.approx(1 / WINDOW)


# ---- real prompts -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus():
    if not corpus_available():
        pytest.skip("prompt corpus not available")
    from pipeline.simulate.corpus import load_corpus
    return load_corpus()


def _by_cat(c) -> dict:
    cats, inv = np.unique(c.categories, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    return dict(zip(cats, np.split(order, np.cumsum(np.bincount(inv))[:-1])))


def _focused(c, rng, n=1000):
    by = _by_cat(c)
    big = sorted(k for k, v in by.items() if len(v) >= 200)
    pool = rng.choice(by[rng.choice(big)], 50, replace=False)
    z = 1.0 / np.arange(1, 51) ** 1.1
    return pool[rng.choice(50, n, p=z / z.sum())]


def _sweep(c, rng, n=1000):
    by = _by_cat(c)
    cats = sorted(by)
    w = np.sqrt([len(by[k]) for k in cats])
    picked = rng.choice(len(cats), n, p=w / w.sum())
    return np.array([rng.choice(by[cats[k]]) for k in picked])


def _run(c, rows, template=None):
    prompts = [c.texts[r] if template is None else template.format(c.texts[r]) for r in rows]
    return windows(c.embeddings[rows].astype(np.float32), prompts)


@pytest.mark.corpus
@pytest.mark.parametrize("feature", ["nov8", "nov12", "nov14", "spread", "growth", "newp"])
def test_coverage_signals_separate_sweep_from_focused_app(corpus, feature):
    rng = np.random.default_rng(5)
    for trial in range(3):
        f = _run(corpus, _focused(corpus, rng))
        s = _run(corpus, _sweep(corpus, rng))
        assert mean(s, feature) > mean(f, feature) + 0.1, (feature, trial)


@pytest.mark.corpus
def test_cot_and_template_signals_separate_a_distiller(corpus):
    rng = np.random.default_rng(6)
    f = _run(corpus, _focused(corpus, rng))
    d = _run(corpus, _sweep(corpus, rng), template="Think step by step and explain your "
                                                  "reasoning.\n\n{}")
    assert mean(d, "cot") > 0.95 > 0.05 > mean(f, "cot")
    assert mean(d, "tmpl") > mean(f, "tmpl") + 0.5


@pytest.mark.corpus
def test_drift_signal_flags_a_takeover_on_real_prompts(corpus):
    rng = np.random.default_rng(7)
    rows = _focused(corpus, rng, 2000)
    taken = rows.copy()
    taken[1200:] = _sweep(corpus, rng, 800)
    calm, after = _run(corpus, rows), _run(corpus, taken)
    assert max(w["drift"] for w in calm[10:]) < 0.15
    assert max(w["drift"] for w in after[24:]) > 0.3


def test_clientnovel_flags_a_stolen_key_not_a_new_office():
    rng = np.random.default_rng(4)
    topics = rng.standard_normal((4, 64))
    proj = SignProjector(seed=0)

    def run(thief: bool):
        s, out = TenantState(), []
        for i in range(800):
            late = i >= 400 and i % 3 == 0          # a third of traffic from a new client
            if late and thief:
                v = rng.standard_normal(64)
            else:
                v = topics[i % 4] + 0.05 * rng.standard_normal(64)
            observe(s, proj.code(v.astype(np.float32)), None, T0 + i * 1000, None,
                    client=2 if late else 1)
            if s.w_n == WINDOW:
                out.append(summarise(s))
        return out

    thief, office = run(True), run(False)
    assert mean(thief[9:], "clientnovel", 0) > 0.25
    assert max(w["clientnovel"] for w in office) < 0.05
    assert mean(office[9:], "newclient", 0) > 0.25     # both use a new client
