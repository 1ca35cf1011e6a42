"""The demo on a bare clone: no corpus next to the checkout, only the shipped prompt sample.

Runs what ``coverwatch demo`` sends (warm-up history, then live traffic with event time
advancing as if sent at 50/s) through the real ``coverwatch replay`` command, with the
corpus hidden, and checks the sweeper is alerted with a full alert and no benign tenant is.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pipeline.demo import SWEEPER, demo_traffic, format_alert, resolve_mode
from pipeline.simulate.corpus import corpus_available, sample_path
from pipeline.simulate.pool import SPLITS, build_pool
from pipeline.simulate.traffic import DEMO_TENANTS

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


@pytest.fixture
def no_corpus(tmp_path, monkeypatch):
    empty = tmp_path / "no-corpus"
    empty.mkdir()
    monkeypatch.setenv("COVERWATCH_CORPUS", str(empty))
    assert not corpus_available()
    return empty


def test_the_shipped_sample_is_real_licensed_text_in_both_splits(no_corpus):
    licensed = {"self_instruct_seed", "self_instruct_user_oriented", "awesome_chatgpt_prompts",
                "awesome_chatgpt_prompts_zh", "gsm8k", "humaneval", "mt_bench", "vicuna_bench",
                "ifeval", "gpteacher", "mmlu", "anthropic_model_written_evals"}
    with gzip.open(sample_path(), "rb") as fh:
        rows = [orjson.loads(line) for line in fh]
    assert 2_000 <= len(rows) <= 4_000
    assert {r["source"] for r in rows} == licensed
    assert all(set(r) == {"text", "source", "category"} for r in rows)   # no vectors
    notice = (sample_path().parent / "NOTICE").read_text()
    assert all(src in notice for src in licensed)
    for split in SPLITS:
        pool = build_pool(split)
        assert pool.origin == "sample" and pool.stand_in
        assert set(pool.sources) <= set(SPLITS[split]) and len(pool) > 1_000
    assert resolve_mode("auto") == "text"


def test_demo_on_a_bare_clone_alerts_the_sweeper_and_no_benign_tenant(no_corpus, tmp_path):
    past, live = demo_traffic(50.0, "auto", realtime=False, limit=6_000,
                              start_ms=1_780_000_000_000)
    log = tmp_path / "demo.jsonl"
    with open(log, "wb") as fh:
        for ev in [*past, *live]:
            fh.write(orjson.dumps(ev) + b"\n")
    out = tmp_path / "alerts.jsonl"
    env = {**os.environ, "COVERWATCH_CORPUS": str(no_corpus)}
    subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", str(log), "--no-clickhouse",
                    "--alerts-out", str(out)], check=True, env=env, capture_output=True)
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    assert {a["tenant_id"] for a in alerts} == {SWEEPER}, [format_alert(a, 0) for a in alerts]
    first = alerts[0]
    benign = set(DEMO_TENANTS) | {e["tenant_id"] for e in past}
    assert SWEEPER not in benign and len(benign) > 30
    # it comes within the first minute of live traffic (50/s, 30% from the sweeper)
    assert first["events_seen"] <= 0.3 * 50 * 60
    schema = json.loads((SCHEMAS / "alert.schema.json").read_text())
    assert set(first) == set(schema["properties"])
    assert SWEEPER in first["evidence"]["summary"] and "percentile" in first["evidence"]["summary"]


def test_the_demo_says_which_alerts_are_false_positives():
    alert = {"severity": "warning", "tenant_id": SWEEPER, "detector": "coverage",
             "events_seen": 50, "evidence": {"summary": "Tenant ... kept reaching"}}
    assert format_alert(alert, 3).endswith("<- the demo's attacker")
    assert "FALSE POSITIVE" in format_alert({**alert, "tenant_id": "t-d36ffa22"}, 3)


def test_top_says_there_are_no_alerts_yet_and_for_which_window(tmp_path):
    """A fresh deployment: events stored, nothing alerted; ``top`` says so in words."""
    log = tmp_path / "quiet.jsonl"
    log.write_bytes(b"".join(orjson.dumps({"event_id": f"e{i}", "ts": 1_780_000_000_000 + i,
                                           "tenant_id": "quiet", "prompt": "hello"}) + b"\n"
                             for i in range(20)))
    # the embedded engine is one process's at a time: both commands run as a user runs them
    env = {**os.environ, "CLICKHOUSE_DSN": f"chdb://{tmp_path / 'ch'}",
           "COVERWATCH_WEB_PORT": "9"}                      # no worker listens there
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", str(log)], env=env,
                          capture_output=True, text=True, check=True)
    done = done.stdout + done.stderr
    assert "replayed 20 events" in done and "0 alerts" in done
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "top", "--hours", "6"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("no alerts yet") and "6 h" in out
