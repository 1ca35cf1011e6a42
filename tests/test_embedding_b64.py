"""``embedding_b64`` through the real worker: stored like the same vector sent as JSON floats.

Gateways that embed can send the vector as base64 bytes (little-endian float32 or float16),
a C decode instead of parsing 384 JSON numbers per event. The worker must accept it, give it
exactly the cell the JSON floats give (float32), and dead-letter a wrong length.
"""
from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from pipeline.kafka_io import produce_lines

from tests.conftest import consume_all, query

pytestmark = pytest.mark.integration
T0 = 1772366400000  # 2026-03-01T12:00:00Z


def test_worker_stores_embedding_b64_like_json_floats(worker_factory):
    w = worker_factory(COVERWATCH_EMBEDDER="none").start()
    s = w.settings
    vecs = np.random.default_rng(7).standard_normal((60, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    lines = []
    for i, v in enumerate(vecs):
        base = {"ts": T0 + i * 1000, "prompt": None}
        lines.append(orjson.dumps({**base, "event_id": f"f-{i}", "tenant_id": "floats",
                                   "embedding": v.tolist()}))
        for name, dtype in (("b64-f32", "<f4"), ("b64-f16", "<f2")):
            lines.append(orjson.dumps({**base, "event_id": f"{name}-{i}", "tenant_id": name,
                                       "embedding_b64": base64.b64encode(
                                           v.astype(dtype).tobytes()).decode()}))
    short = base64.b64encode(vecs[0][:100].tobytes()).decode()
    lines.append(orjson.dumps({"event_id": "short", "ts": T0, "tenant_id": "floats",
                               "embedding_b64": short}))
    produce_lines(lines, s, s.topic_logs)
    w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= 180
               and m.get("coverwatch_dlq_total", 0) >= 1, what="all events processed")
    rows = query(w, "SELECT tenant_id, count(), sum(has_embedding) FROM coverwatch.events "
                    "FINAL GROUP BY tenant_id ORDER BY tenant_id")
    assert rows == [["b64-f16", 60, 60], ["b64-f32", 60, 60], ["floats", 60, 60]]
    cells = query(w, "SELECT tenant_id, groupArray(cell) FROM (SELECT tenant_id, cell "
                     "FROM coverwatch.events FINAL ORDER BY ts) GROUP BY tenant_id "
                     "ORDER BY tenant_id")
    by = dict((t, c) for t, c in cells)
    assert by["b64-f32"] == by["floats"]                  # the very same vectors
    assert sum(a == b for a, b in zip(by["b64-f16"], by["floats"])) >= 50   # rounded to half
    [dead] = consume_all(s, s.topic_dlq, 1)
    assert dead["reason"] == "embedding_dim" and "embedding_b64" in dead["detail"]
