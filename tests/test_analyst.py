"""Analyst side: after a replay of a simulated day, every documented query answers right."""
from __future__ import annotations

import gzip
from collections import Counter

import orjson
import pytest

from pipeline.analyst import doc_queries, plot_coverage, run_query
from pipeline.replay import replay
from pipeline.settings import Settings
from pipeline.simulate.corpus import corpus_available
from pipeline.simulate.traffic import generate

from tests.conftest import fresh_engine


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, engine_dsn):
    """One simulated day replayed into a fresh embedded ClickHouse (twice: idempotent)."""
    tmp = tmp_path_factory.mktemp("analyst")
    traffic = generate(split="calib", seed=3, tenants=40, days=1, hydra_accounts=(20, 25))
    events, labels = traffic
    path = tmp / "day.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        for e in events:
            fh.write(orjson.dumps(e) + b"\n")
    fresh_engine(engine_dsn)      # the process's one embedded engine, emptied
    settings = Settings(clickhouse_dsn=engine_dsn, embedder="none")
    first = replay([path], settings)
    second = replay([path], settings)
    return settings, first, second, labels


def q(settings, name, **params):
    columns, rows = run_query(settings, doc_queries()[name], params or None)
    return [dict(zip(columns, r)) for r in rows]


def test_every_documented_query_runs(replayed):
    settings, first, *_ = replayed
    tenant = next(iter({a.tenant_id for a in first.alerts}), "none")
    for name, sql in doc_queries().items():
        params = {"tenant": tenant} if "{tenant:" in sql else None
        run_query(settings, sql, params)  # raises on any error


def test_a_replayed_batch_adds_no_rows(replayed):
    settings, first, second, _ = replayed
    assert second.events == first.events
    (raw,) = run_query(settings, "SELECT count() FROM coverwatch.events")[1]
    assert raw[0] == first.events  # no FINAL: the second replay was deduplicated at insert


def test_events_per_tenant_match_the_replay(replayed):
    settings, first, _, labels = replayed
    rows = q(settings, "events_per_tenant")
    got = {r["tenant_id"]: r["events"] for r in rows}
    assert sum(got.values()) == first.events
    assert set(got) == set(labels)


def test_alerts_per_tenant_match_the_replay(replayed):
    settings, first, *_ = replayed
    want = Counter(a.tenant_id for a in {a.alert_id: a for a in first.alerts}.values())
    got = {r["tenant_id"]: r["alerts"] for r in q(settings, "alerts_per_tenant")}
    assert got == dict(want)


def test_coverage_curve_ends_at_the_tenants_distinct_cells(replayed, tmp_path):
    settings, first, *_ = replayed
    tenant = q(settings, "novelty_leaders")[0]["tenant_id"]
    curve = q(settings, "tenant_coverage_curve", tenant=tenant)
    (total,) = run_query(settings, "SELECT sum(novel) FROM coverwatch.events FINAL WHERE "
                         "tenant_id = {t:String}", {"t": tenant})[1]
    assert curve and curve[-1]["cells"] <= total[0]
    assert all(a["cells"] <= b["cells"] for a, b in zip(curve, curve[1:]))
    band = run_query(settings, doc_queries()["population_coverage_band"])[1]
    out = tmp_path / "curve.png"
    plot_coverage(tenant, [[r["n"], r["cells"]] for r in curve], band, str(out))
    assert out.stat().st_size > 10_000


def test_query_is_read_only(replayed):
    settings, *_ = replayed
    with pytest.raises(SystemExit, match="readonly|READONLY"):
        run_query(settings, "DROP TABLE coverwatch.events")
    with pytest.raises(SystemExit):
        run_query(settings, "SELECT 1; DROP TABLE coverwatch.events")


@pytest.mark.corpus
@pytest.mark.skipif(not corpus_available(), reason="ranking quality needs the real prompts")
def test_top_names_the_attackers_first(replayed):
    from pipeline.analyst import TOP_SQL
    settings, first, _, labels = replayed
    columns, rows = run_query(settings, TOP_SQL, {"hours": 48, "limit": 20})
    ranked = [r[columns.index("tenant_id")] for r in rows]
    assert ranked, "no tenant alerted"
    attackers = [t for t in ranked if labels[t]["is_attack"]]
    assert attackers and ranked[:len(attackers)] == attackers, [
        (t, labels[t]["family"]) for t in ranked]
