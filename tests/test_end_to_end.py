"""Through the real broker and the real embedded ClickHouse: ingest, DLQ, alerts, restart."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import orjson
import pytest

from pipeline.kafka_io import produce_lines

from tests.conftest import consume_all, query, raw_counts

pytestmark = pytest.mark.integration
T0 = 1772366400000  # 2026-03-01T12:00:00Z


def traffic() -> tuple[list[bytes], int]:
    """Benign tenants at a human pace, one tenant bursting 600 queries in a minute."""
    good = []
    for t in range(5):
        good += [orjson.dumps({"event_id": f"b{t}-{i}", "ts": T0 + i * 20_000,
                               "tenant_id": f"benign-{t}", "prompt": f"question {i % 7}"})
                 for i in range(120)]
    good += [orjson.dumps({"event_id": f"x-{i}", "ts": T0 + 30 * 60_000 + i * 90,
                           "tenant_id": "burster 'quoted'", "prompt": f"item {i}"})
             for i in range(600)]
    bad = [b"{not json", b"[1,2]", b'{"event_id":"e","ts":1,"tenant_id":"\xff"}',
           orjson.dumps({"event_id": "m", "tenant_id": "t"}),
           orjson.dumps({"event_id": "w", "ts": T0, "tenant_id": "t", "embedding": [1, 2]})]
    msgs = good[:300] + bad[:2] + good[300:] + bad[2:]
    return msgs, len(bad)




def assigned_now(w) -> None:
    """The restarted worker's consumers own every partition, and Faust's recovery ran."""
    groups = w.group_members()
    assert set(groups) == set(w.groups()), groups
    for g in groups.values():
        covered = {p for parts in g["members"].values() for p in parts}
        assert g["state"] == "Stable" and covered == set(range(w.settings.partitions)), groups
    assert "Worker ready" in w.log_since_start()


def second_burst(n: int = 600) -> list[bytes]:
    t1 = T0 + 3 * 3600_000          # two and a half hours after the first burst
    return [orjson.dumps({"event_id": f"y-{i}", "ts": t1 + i * 90,
                          "tenant_id": "burster 'quoted'", "prompt": f"again {i}"})
            for i in range(n)]


@pytest.mark.parametrize("keyed", ["0", "1"], ids=["repartitioned", "keyed-input"])
def test_worker_end_to_end_with_restart(worker_factory, keyed):
    """The same guarantees with the repartition hop and without it (``produce`` keys the
    input topic by tenant, so ``COVERWATCH_INPUT_KEYED=1`` detects straight from it)."""
    w = worker_factory(COVERWATCH_DETECTOR="burst", COVERWATCH_EMBEDDER="none",
                       COVERWATCH_TEST_STOP_MERGES="1", COVERWATCH_INPUT_KEYED=keyed).start()
    s = w.settings
    msgs, n_bad = traffic()
    n_good = len(msgs) - n_bad
    produce_lines(msgs, s, s.topic_logs)
    w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= n_good
               and m.get("coverwatch_dlq_total", 0) >= n_bad, what="all events processed")

    assert query(w, "SELECT count() FROM coverwatch.events") == [[n_good]]
    dlq = consume_all(s, s.topic_dlq, n_bad)
    assert len(dlq) == n_bad
    assert {d["reason"] for d in dlq} == {"invalid_json", "not_object", "not_utf8",
                                          "missing_field", "embedding_dim"}
    assert all({"topic", "partition", "offset", "original", "detail"} <= set(d) for d in dlq)
    assert [d["original_encoding"] for d in dlq if d["reason"] == "not_utf8"] == ["base64"]

    alerts = consume_all(s, s.topic_alerts, 1)
    assert [a["tenant_id"] for a in alerts] == ["burster 'quoted'"]
    assert alerts[0]["evidence"]["summary"] and alerts[0]["events_seen"] >= 200
    rows = query(w, "SELECT tenant_id, alert_id FROM coverwatch.alerts FINAL")
    assert rows == [["burster 'quoted'", alerts[0]["alert_id"]]]

    w.stop()
    w.start()
    assigned_now(w)   # start() returned after the consumers joined: the checks below count
    time.sleep(5)     # give the restarted worker the chance to (wrongly) re-process anything
    m = w.metrics()
    assert m["coverwatch_events_detected_total"] == 0
    assert m.get("coverwatch_redelivered_skipped_total", 0) == 0
    c = raw_counts(lambda sql: query(w, sql))        # raw rows, merges stopped
    assert (c["event_rows"], c["events"], c["alert_rows"], c["merged_parts"]) == (
        n_good, n_good, 1, 0)

    # State restored, not restarted: the burster's second burst is its second episode
    # (a new alert_id) and counts every event it ever sent (a fresh state would count only
    # the second burst's)
    more = second_burst()
    produce_lines(more, s, s.topic_logs)
    w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= len(more),
               what="second burst processed")
    alerts = consume_all(s, s.topic_alerts, 2)
    assert len(alerts) == 2 and alerts[1]["alert_id"] != alerts[0]["alert_id"]
    assert alerts[1]["events_seen"] > 600 + 1   # the first burst's 600 events counted too


def test_query_endpoint_requires_the_configured_token(worker_factory):
    w = worker_factory(COVERWATCH_DETECTOR="burst", COVERWATCH_EMBEDDER="none",
                       COVERWATCH_QUERY_TOKEN="s3cret").start()
    url = f"http://127.0.0.1:{w.settings.web_port}/query"
    body = orjson.dumps({"sql": "SELECT 1"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30)
    assert exc.value.code == 401
    ok = urllib.request.Request(url, data=body, headers={"Authorization": "Bearer s3cret"})
    assert orjson.loads(urllib.request.urlopen(ok, timeout=30).read())["rows"] == [[1]]
    drop = urllib.request.Request(url, data=orjson.dumps({"sql": "DROP TABLE coverwatch.events"}),
                                  headers={"Authorization": "Bearer s3cret"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(drop, timeout=30)
    assert exc.value.code == 400 and b"readonly" in exc.value.read().lower()
