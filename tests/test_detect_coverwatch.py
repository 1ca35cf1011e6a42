"""CoverwatchDetector: parameters, alert policy, evidence, checkpoints, summaries (synthetic)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.contracts.events import Event
from pipeline.detect.coverwatch import RULE_SCALES, CoverwatchDetector
from pipeline.detect.population import Population, age_bucket, feeds_population
from pipeline.simulate.corpus import corpus_available

T0 = 1_767_225_600_000
DIM = 24


def app_events(rng, topics, tenant, n, start=0):
    out = []
    for i in range(start, start + n):
        v = topics[i % len(topics)] + 0.05 * rng.standard_normal(DIM)
        out.append(Event(f"{tenant}-{i}", T0 + i * 2000, tenant, prompt=f"question {i % 5}",
                         embedding=v.astype(np.float32), output_tokens=200))
    return out


def sweep_events(rng, tenant, n, start=0, template="Explain step by step: {}",
                 output_tokens=1500, repeat=0):
    """All over the space; with ``repeat``, every ``repeat``-th prompt is asked again."""
    return [Event(f"{tenant}-{i}", T0 + i * 2000, tenant,
                  prompt=template.format(f"topic {i - 1 if repeat and i % repeat == 0 else i}"),
                  embedding=rng.standard_normal(DIM).astype(np.float32),
                  output_tokens=output_tokens)
            for i in range(start, start + n)]


def population(det, rng, tenants=40, n=300):
    topics = {t: rng.standard_normal((4, DIM)) for t in range(tenants)}
    for i in range(0, n, 10):
        batch = []
        for t in range(tenants):
            batch += app_events(rng, topics[t], f"app{t}", 10, start=i)
        det.update_many(batch)


@pytest.fixture()
def warm():
    rng = np.random.default_rng(0)
    det = CoverwatchDetector(window=20, min_windows=20, seed=5)
    population(det, rng)
    return det, rng


@pytest.mark.parametrize("kw", [dict(window=1), dict(threshold=1.0, release=2.0),
                                dict(critical=0.9), dict(cooldown=-1), dict(min_windows=0),
                                dict(hst_trees=0)])
def test_bad_arguments_raise(kw):
    with pytest.raises(ValueError):
        CoverwatchDetector(**kw)


def test_constructor_arguments_are_stored_as_given():
    det = CoverwatchDetector(window=30, threshold=1.5, critical=4.0, seed=9)
    assert (det.window, det.threshold, det.seed) == (30, 1.5, 9)
    with pytest.raises(ValueError):
        CoverwatchDetector(rule_scales=(1.0,))
    assert repr(det.clone()) == repr(det)


def test_sweeper_alerts_once_per_episode_with_actionable_evidence(warm):
    det, rng = warm
    alerts = []
    for e in sweep_events(rng, "thief", 400):
        alerts += det.update(e).alerts
    assert alerts, "a sweeper in a population of focused apps must alert"
    first = alerts[0]
    assert first.tenant_id == "thief" and first.events_seen <= 60
    assert first.severity in ("warning", "critical")
    ev = first.evidence
    assert ev["summary"].startswith("Tenant thief ") and ev["summary"].count(".") >= 1
    assert "percentile of tenants" in ev["summary"]
    assert set(ev["signals"]) >= {"embedding", "prompt", "timing"}
    assert ev["features"] and ev["fired"]
    assert set(first.detector.split("+")) <= {"coverage", "template", "cot", "tokens", "drift",
                                             "population", "timing"}
    # hysteresis: one warning (and at most one escalation) for one continuous episode
    assert len({a.alert_id for a in alerts}) == len(alerts) <= 2
    assert not any(a.tenant_id != "thief" for a in alerts)


@pytest.mark.parametrize("tokens", [5, 300, 4000])
def test_answer_length_neither_opens_nor_closes_the_coverage_rule(warm, tokens):
    # the attacker picks its answer length (concise answers, a classifier's labels), so a
    # sweep is seen whatever it is, and a focused app is not flagged for long answers
    det, rng = warm
    sweep = det.clone()
    sweep.load_population(det.dump_population())
    fired = [a.detector for e in sweep_events(rng, "thief", 400, template="{}",
                                              output_tokens=tokens)
             for a in sweep.update(e).alerts]
    assert any(d.startswith("coverage") for d in fired), fired
    calm = det.clone()
    calm.load_population(det.dump_population())
    topics = rng.standard_normal((4, DIM))
    long = [Event(e.event_id, e.ts_ms, e.tenant_id, prompt=e.prompt, embedding=e.embedding,
                  output_tokens=tokens) for e in app_events(rng, topics, "calm", 400)]
    assert not [a for e in long for a in calm.update(e).alerts]


def test_alert_ids_are_deterministic():
    def run():
        rng = np.random.default_rng(0)
        det = CoverwatchDetector(window=20, min_windows=20, seed=5)
        population(det, rng, tenants=30, n=200)
        return [a.alert_id for e in sweep_events(rng, "thief", 200) for a in det.update(e).alerts]
    a, b = run(), run()
    assert a and a == b


def test_cooldown_blocks_immediate_re_alerting(warm):
    det, rng = warm
    topics = rng.standard_normal((4, DIM))
    # sweep, calm down, sweep again: the second burst falls inside a long cooldown
    stream = (sweep_events(rng, "x", 200) + app_events(rng, topics, "x", 600, start=200)
              + sweep_events(rng, "x", 200, start=800))

    def alerts_with(cooldown):
        d = CoverwatchDetector(window=20, min_windows=20, seed=5, cooldown=cooldown)
        d.load_population(det.dump_population())
        return [a for e in stream for a in d.update(e).alerts]

    # every alert, whatever its severity: all of them belong to the first sweep's episode
    alerts = alerts_with(10_000)
    assert alerts, "the first sweep must alert"
    assert all(a.events_seen <= 200 for a in alerts), [(a.severity, a.events_seen)
                                                      for a in alerts]
    assert len(alerts) <= 2   # one episode: a warning and at most one escalation
    # without a cooldown the same stream does alert on the second sweep: the check above
    # is about the cooldown, not a second sweep too weak to alert anyway
    again = alerts_with(0)
    assert any(a.events_seen > 800 for a in again), [(a.severity, a.events_seen)
                                                    for a in again]


def test_focused_apps_do_not_alert(warm):
    det, rng = warm
    topics = rng.standard_normal((4, DIM))
    assert not [a for e in app_events(rng, topics, "calm", 600) for a in det.update(e).alerts]


def test_population_round_trip_and_summaries(warm):
    det, rng = warm
    summaries = det.drain_summaries()
    assert summaries and {"tenant_id", "ts_ms", "features", "cells_minhash"} <= set(summaries[0])
    assert det.drain_summaries() == []
    other = CoverwatchDetector(window=20, min_windows=20, seed=5)
    other.load_population(det.dump_population())
    events = sweep_events(rng, "s", 100)
    a = [(s.score, [x.alert_id for x in s.alerts]) for s in det.update_many(events)]
    b = [(s.score, [x.alert_id for x in s.alerts]) for s in other.update_many(events)]
    assert a == b
    with pytest.raises(ValueError):
        other.load_population(det.dump_tenant("s"))


def test_scored_carries_the_window_summary(warm):
    det, rng = warm
    out = det.update_many(sweep_events(rng, "s", 40))
    closing = [s for s in out if s.summary is not None]
    assert len(closing) == 2 and closing[0].summary["events_seen"] == 20


def test_calibrate_sets_threshold_from_benign_traffic():
    rng = np.random.default_rng(3)
    topics = {t: rng.standard_normal((4, DIM)) for t in range(30)}
    events = [e for i in range(0, 200, 10) for t in range(30)
              for e in app_events(rng, topics[t], f"c{t}", 10, start=i)]
    det = CoverwatchDetector.calibrate(events, target_fpr=0.05, window=20, min_windows=20)
    assert len(det.rule_scales) == len(RULE_SCALES) and det.population_windows == 0
    assert det.tenants == 0 and det.window == 20
    alerts = [a for e in sweep_events(rng, "s", 200) for a in det.update(e).alerts]
    assert alerts


def test_age_buckets_and_population_feeding():
    assert [age_bucket(k) for k in (1, 2, 3, 4, 7, 8, 200)] == [0, 1, 1, 2, 2, 3, 7]
    fed = [k for k in range(1, 300) if feeds_population(k)]
    assert fed[:6] == [1, 2, 3, 4, 8, 16] and len(fed) < 15
    with pytest.raises(ValueError):
        Population(0)


def test_rule_scales_per_rule_or_per_age_bucket():
    from pipeline.detect.coverwatch import RULES
    from pipeline.detect.population import BUCKETS
    CoverwatchDetector(rule_scales=(1.0,) * len(RULES))
    CoverwatchDetector(rule_scales=tuple((1.0,) * BUCKETS for _ in RULES))
    for bad in [(1.0,) * (len(RULES) + 1), tuple((1.0,) * (BUCKETS - 1) for _ in RULES),
                (0.0,) * len(RULES)]:
        with pytest.raises(ValueError):
            CoverwatchDetector(rule_scales=bad)


def test_metadata_only_streams_cannot_fire_coverage_on_answer_length_alone():
    # a gateway that logs neither prompts nor vectors: long answers are not coverage
    det = CoverwatchDetector(window=20, min_windows=20, seed=5)
    for i in range(0, 600, 10):
        det.update_many([Event(f"a{t}-{j}", T0 + j * 2000, f"app{t}", output_tokens=150)
                         for t in range(30) for j in range(i, i + 10)])
    long = [Event(f"l-{j}", T0 + j * 2000, "long", output_tokens=4000) for j in range(400)]
    assert not [a for s in det.update_many(long) for a in s.alerts]


def test_chain_of_thought_wording_alone_fires_nothing(warm):
    """A tutoring app asks for steps on its own syllabus: CoT wording far above peers, its
    content that of a focused app. The cot rule needs moving content as well (issue 14:
    wording is the attacker's to set, so it may only explain or escalate). A distiller with
    the same wording and never-sent prompts is still named for chain of thought."""
    det, rng = warm
    tutor = det.clone()
    tutor.load_population(det.dump_population())
    topics = rng.standard_normal((4, DIM))
    lessons = [Event(e.event_id, e.ts_ms, "tutor", prompt=f"Explain step by step: lesson {i % 6}",
                     embedding=e.embedding, output_tokens=300)
               for i, e in enumerate(app_events(rng, topics, "tutor", 400))]
    assert not [a for e in lessons for a in tutor.update(e).alerts]
    distiller = det.clone()
    distiller.load_population(det.dump_population())
    fired = [a.evidence["fired"] for e in sweep_events(rng, "distiller", 400)
             for a in distiller.update(e).alerts]
    assert any("cot" in f for f in fired), fired


def test_sweepers_outnumbering_apps_are_judged_against_the_prior_not_themselves():
    """A small gateway whose tenants are mostly sweepers (issue 14, small deployments): the
    prior (here learned from 40 apps, as ``pipeline.detect.prior`` learns it from public
    traffic) anchors the population, and sweeper windows, extreme against it, do not teach
    it. Judged against a population of themselves, the sweepers would be its median."""
    rng = np.random.default_rng(3)
    ref = CoverwatchDetector(window=20, min_windows=20, seed=5, prior=None,
                             population_windows=10**9)
    population(ref, rng)
    det = CoverwatchDetector(window=20, min_windows=20, seed=5, prior=None)
    det._pop.set_prior(ref._pop.hist, ref._pop.count)
    topics = {t: rng.standard_normal((4, DIM)) for t in range(10)}
    flagged = set()
    for i in range(0, 140, 10):
        batch = []
        for t in range(10):
            batch += app_events(rng, topics[t], f"app{t}", 10, start=i)
        for t in range(200):
            batch += sweep_events(rng, f"sweeper{t}", 10, start=i, template="Tell me about {}",
                                  output_tokens=200)
        flagged |= {a.tenant_id for s in det.update_many(batch) for a in s.alerts}
    assert sum(t.startswith("sweeper") for t in flagged) >= 190
    assert not any(t.startswith("app") for t in flagged)


def test_a_gateway_of_broad_chat_products_learns_its_breadth_but_not_a_sweep():
    """General-chat products relaying many people are broad, but land where the gateway's
    other tenants land; a sweep lands where few do. A window that is extreme against the
    prior on coverage alone, with a rare-cell share at or below the population's median,
    teaches the population: after a few dozen such products have signed up, the next ones
    are judged against their own kind and not flagged, while a sweep into rare regions is
    still named at its first window (without the exception, all 80 products are flagged)."""
    rng = np.random.default_rng(0)
    shared = rng.standard_normal((30, DIM))            # the topics everyone asks about

    def ask(tenant, i, topic, prompt):
        v = topic + 0.1 * rng.standard_normal(DIM)
        return Event(f"{tenant}-{i}", T0 + i * 2000, tenant, prompt=prompt,
                     embedding=v.astype(np.float32), output_tokens=200)

    def apps(det, prefix, n, events):
        topics = {t: rng.choice(30, 4, replace=False) for t in range(n)}
        for i in range(0, events, 10):
            det.update_many([ask(f"{prefix}{t}", j, shared[topics[t][j % 4]], f"q{j % 5}")
                             for t in range(n) for j in range(i, i + 10)])

    ref = CoverwatchDetector(window=20, min_windows=20, seed=5, prior=None,
                             population_windows=10**9)
    apps(ref, "app", 40, 300)                          # a prior of narrow apps
    det = CoverwatchDetector(window=20, min_windows=20, seed=5, prior=None)
    det._pop.set_prior(ref._pop.hist, ref._pop.count)
    apps(det, "app", 40, 450)                          # the cell density warms
    apps(det, "new", 40, 100)                          # young tenants get rare-cell figures
    assert det._density.seen >= 16_384
    flagged = []
    for wave in range(4):                              # 20 broad products sign up at a time
        alerts = []
        for i in range(0, 60, 10):
            alerts += [a for s in det.update_many(
                [ask(f"chat{wave}-{t}", j, shared[rng.integers(30)], f"question {t} {j}")
                 for t in range(20) for j in range(i, i + 10)]) for a in s.alerts]
        flagged.append(len({a.tenant_id for a in alerts}))
    assert flagged[0] == 20 and flagged[2:] == [0, 0], flagged
    alerts = []
    for j in range(100):
        alerts += det.update(ask("sweep", j, 10 * rng.standard_normal(DIM), f"topic {j}")).alerts
    assert (alerts[0].detector.split("+")[0], alerts[0].events_seen) == ("coverage", 20)


@pytest.mark.skipif(not corpus_available(), reason="the prior is learned from the real prompts")
def test_the_shipped_prior_is_what_its_build_command_gives(tmp_path):
    """``prior.npz`` is package data every figure in the README depends on: the command
    that builds it must give it back bit for bit from the current code, or a rebuild
    silently changes detection (a change of the population's learn rule once made the
    build keep 30% fewer windows: not the prior any README figure was measured with)."""
    from pipeline.detect import prior

    rebuilt = prior.build(path=tmp_path / "prior.npz")
    with np.load(prior.PATH) as shipped, np.load(rebuilt) as got:
        assert list(got["features"]) == list(shipped["features"])
        for key in shipped.files:
            assert np.array_equal(got[key], shipped[key]), key


def test_alert_sentence_compares_a_count_with_a_count():
    # seen in make run: "they covered 31 coarse topics (p90 58%)"
    from pipeline.detect.policy import describe
    text = describe([("newp", 1.0, 0.86), ("spread6", 0.62, 0.58)], 50, 50)
    assert "they covered 31 coarse topics (p90 29)" in text, text


def test_a_thief_on_the_victims_own_client_is_named_by_its_novelty(warm):
    """Issue 14: a stolen key used through the victim's own app (same client, no client
    signal at all here) adds a sweep at a third of the traffic. The tenant's own rate of new
    regions rises above its usual level window after window; a feature launch on the same
    app (two new topics at the same share) lifts it once and is not flagged."""
    det, rng = warm
    topics = rng.standard_normal((4, DIM))
    history = app_events(rng, topics, "victim", 400)

    def mixed(extra):
        out = []
        for i, e in enumerate(app_events(rng, topics, "victim", 400, start=400)):
            if i % 3 == 2:
                v = extra(i)
                e = Event(e.event_id, e.ts_ms, "victim", prompt=f"new question {i}",
                          embedding=v.astype(np.float32), output_tokens=200)
            out.append(e)
        return out

    def alerts(stream):
        d = det.clone()
        d.load_population(det.dump_population())
        return [a for e in history + stream for a in d.update(e).alerts]

    stolen = alerts(mixed(lambda i: rng.standard_normal(DIM)))
    assert any("novelty" in a.evidence["fired"] and a.events_seen > 400 for a in stolen), \
        [(a.detector, a.events_seen) for a in stolen]
    assert all(a.events_seen > 400 for a in stolen)
    assert "than its own usual level" in stolen[0].evidence["summary"]
    launch = rng.standard_normal((2, DIM))
    assert not alerts(mixed(lambda i: launch[i % 2] + 0.05 * rng.standard_normal(DIM)))



def test_the_coverage_scale_depends_on_age_and_the_embedding_space():
    """One coverage scale for all ages judged sweeps at their first window or never (issue
    14, ``bench age``): the uncalibrated detector carries one per age bucket and space."""
    from pipeline.detect.coverwatch import COVERAGE_BY_AGE, RULES
    cov = [name for name, _, _ in RULES].index("coverage")
    for space in ("text", "provided"):
        got = CoverwatchDetector(prior=space)._scales[cov]
        assert list(got) == list(COVERAGE_BY_AGE[space])
        assert got[0] == RULE_SCALES[cov] and max(got[1:]) <= got[0] and min(got[2:]) < got[0]
    assert set(CoverwatchDetector(prior=None)._scales[cov]) == {RULE_SCALES[cov]}


def _start_up_sweep(coverage_scale: float):
    """A gateway met at start-up: one busy app has warmed the cell density, but the first
    age bucket holds one of the gateway's own windows, so the rare-cell share has no
    population figure (no prior carries it) when a sweep into rare regions finishes its
    first window; then 40 ordinary apps finish theirs. Returns the sweep's unscaled coverage
    score as first judged and with the figure, and every alert after the sweep started."""
    from pipeline.detect.coverwatch import ALL_FEATURES, RULES
    rng = np.random.default_rng(3)
    common = rng.standard_normal((6, DIM))
    ref = CoverwatchDetector(window=20, min_windows=20, seed=5, prior=None,
                             population_windows=10**9)
    for t in range(40):
        ref.update_many(app_events(rng, common[rng.choice(6, 3, replace=False)], f"r{t}", 100))
    scales = list(RULE_SCALES)
    scales[[name for name, _, _ in RULES].index("coverage")] = coverage_scale
    det = CoverwatchDetector(window=20, min_windows=20, seed=5, prior=None,
                             rule_scales=tuple(scales))
    det._pop.set_prior(ref._pop.hist, ref._pop.count)
    for i in range(0, 16_400, 400):                    # the cell density warms
        det.update_many(app_events(rng, common, "busy", 400, start=i))
    assert det._pop.count[0] == 1
    scored = det.update_many(sweep_events(rng, "sweep", 20, template="{}", output_tokens=300))
    sweep = next(s.summary for s in scored if s.summary is not None)
    x = [sweep["features"][f] for f in ALL_FEATURES]
    cov = [name for name, _, _ in RULES].index("coverage")
    alerts = scored.alerts()
    for t in range(40):
        alerts += det.update_many(app_events(rng, common[rng.choice(6, 3, replace=False)],
                                             f"app{t}", 20)).alerts()
    q = det._pop.quantiles(0, fresh=True)
    return sweep["rules"][cov], det._score(x, q, 0)[0][cov], alerts


def test_a_window_judged_before_its_age_had_rare_cell_figures_is_judged_again():
    """Issue 14, live start: a machine-paced sweep finishes its first window before the
    gateway's own tenants have taught the population anything, so its coverage was scored
    without the rare-cell share, the feature that sets a sweep apart from a broad product.
    Once the bucket holds enough of the gateway's own windows, the window is judged again
    with it, and the alert names the window it judged."""
    first, full, _ = _start_up_sweep(100.0)            # scores only: nothing can fire
    assert not np.isnan(first) and full > first, (first, full)
    _, _, alerts = _start_up_sweep((first + full) / 2)
    assert [a.tenant_id for a in alerts] == ["sweep"], [(a.tenant_id, a.detector) for a in alerts]
    got = alerts[0]
    assert got.detector.split("+")[0] == "coverage"
    assert got.evidence["rejudged"]["window"] == 1 and got.evidence["rejudged"]["events_seen"] == 20
    assert got.evidence["rejudged"]["own_windows_now"] == 30
    assert "queries 1-20; judged again" in got.evidence["summary"], got.evidence["summary"]


def test_coverage_reads_two_windows_from_the_fourth():
    """One window's coverage is noisy, and judged alone, window after window, it flagged
    long-lived chat products on one window (issue 14, session 21: 12 of 47 chat products,
    text, attackers rare, at 590-6,980 queries). From age bucket ``SUSTAINED_FROM`` (the
    fourth window) on the rule reads the mean of the tenant's last two windows' scores; a
    younger tenant's window alone (a sweep must be named at its first windows)."""
    from pipeline.detect.coverwatch import RULES, SUSTAINED_FROM
    cov = [name for name, _, _ in RULES].index("coverage")
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((5, DIM))
    det = CoverwatchDetector(window=20, min_windows=20, seed=1, prior=None)
    for i in range(0, 100, 10):
        det.update_many([e for t in range(40) for e in app_events(
            rng, topics, f"app{t}", 10, start=i)])
    own, read = [], []
    for k in range(8):              # sweeping and ordinary windows in turn
        events = (sweep_events(rng, "t", 20, start=20 * k, template="{}", output_tokens=300)
                  if k % 2 == 0 else app_events(rng, topics, "t", 20, start=20 * k))
        s = det.update_many(events)[19].summary
        own.append(det._tenants["t"].prev_cov)
        read.append(s["rules"][cov])
    assert all(a != b for a, b in zip(own, own[1:])) and own[0] > own[1], own
    for k in range(8):
        want = own[k] if age_bucket(k + 1) < SUSTAINED_FROM else 0.5 * (own[k] + own[k - 1])
        assert read[k] == pytest.approx(want), (k, read, own)


@pytest.mark.skipif(not corpus_available(), reason="the scales are read on the real prompts")
def test_the_shipped_coverage_scales_are_what_their_reading_gives():
    """``COVERAGE_BY_AGE`` from the fourth window on is read by ``coverwatch bench scales``
    (calib split, one attacker per family): a change to the coverage rule, the prior or the
    features must read them again, or the worker runs with scales fitted to another rule."""
    from pipeline.bench.coverage_scales import read_scales
    from pipeline.bench.detect import FULL
    from pipeline.detect.coverwatch import COVERAGE_BY_AGE
    for mode in ("provided", "text"):
        got = read_scales(mode, 0, FULL["calib"])["scales"]
        assert tuple(got) == COVERAGE_BY_AGE[mode], (mode, got)


def test_a_tenant_checkpointed_before_the_two_window_rule_restores():
    """A deployment's tenant states outlive an upgrade: a state pickled before
    ``TenantState`` had ``prev_cov`` must restore and keep scoring (its first window after
    the upgrade is read alone)."""
    import pickle
    rng = np.random.default_rng(4)
    det = CoverwatchDetector(window=20, min_windows=20, seed=5)
    det.update_many(sweep_events(rng, "old", 100))
    old = pickle.loads(det.dump_tenant("old"))
    del old.prev_cov                               # as pickled before the field existed
    det.load_tenant("old", pickle.dumps(old))
    scored = det.update_many(sweep_events(rng, "old", 100, start=100))
    assert sum(s.summary is not None for s in scored) == 5
