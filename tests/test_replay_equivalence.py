"""The worker and `coverwatch replay` run the same core: same input, same alerts."""
from __future__ import annotations

import gzip

import orjson
import pytest

from pipeline.kafka_io import produce_lines
from pipeline.replay import replay
from pipeline.settings import Settings
from pipeline.simulate.traffic import generate
from tests.conftest import consume_all

pytestmark = pytest.mark.integration


def test_worker_and_replay_raise_identical_alerts(worker_factory, tmp_path):
    events, _ = generate(split="calib", seed=11, tenants=24, days=1, hydra_accounts=(20, 22))
    raw = [orjson.dumps(e) for e in events]  # already in event-time order
    path = tmp_path / "day.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(b"\n".join(raw) + b"\n")
    ref = replay([path], Settings(clickhouse_dsn=f"chdb://{tmp_path / 'ref'}"),
                 clickhouse=False)
    assert ref.alerts, "no alert in the reference replay: the comparison would be empty"
    want = sorted((a.alert_id, a.tenant_id, a.events_seen, a.severity, a.detector)
                  for a in ref.alerts)

    # One partition, produced in event-time order: the worker sees replay's order exactly.
    w = worker_factory(partitions=1).start()
    produce_lines(raw, w.settings, w.settings.topic_logs)
    w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= len(raw),
               timeout=300, what="all events detected")
    got = consume_all(w.settings, w.settings.topic_alerts, len(want), timeout=60)
    assert sorted((a["alert_id"], a["tenant_id"], a["events_seen"], a["severity"],
                   a["detector"]) for a in got) == want
