"""OTLP JSON batches, as the collector's Kafka exporter writes them, through the real worker.

Each Kafka record holds many spans (or log records) of several services; only the GenAI
calls must reach ``coverwatch.events``, under the right tenants with their token counts,
and records the adapter cannot map must reach the DLQ with reason ``adapter``.
"""
from __future__ import annotations


import orjson
import pytest

from pipeline.kafka_io import produce_lines

from tests.conftest import consume_all, query

pytestmark = pytest.mark.integration
T0_NS = 1772366400 * 10**9  # 2026-03-01T12:00:00Z




def attr(key: str, value) -> dict:
    v = {"intValue": str(value)} if isinstance(value, int) else {"stringValue": value}
    return {"key": key, "value": v}


def span(i: int, tenant_tag: str, attrs: list, ts_ns: int) -> dict:
    return {"traceId": f"{tenant_tag:0>8}{i:024x}", "spanId": f"{i:016x}",
            "name": "chat", "kind": 3, "startTimeUnixNano": str(ts_ns),
            "endTimeUnixNano": str(ts_ns + 400_000_000), "attributes": attrs, "status": {}}


def resource(attrs: list, spans: list) -> dict:
    return {"resource": {"attributes": attrs},
            "scopeSpans": [{"scope": {"name": "opentelemetry.instrumentation.openai_v2"},
                            "spans": spans}]}


def batches(n_batches: int = 6, per: int = 20):
    """Per batch: `per` chat spans of tenant acme (tenant.id), `per` OpenInference spans of a
    service with no tenant.id (falls back to service.name), and non-GenAI spans."""
    out, i = [], 0
    for b in range(n_batches):
        acme, rag, noise = [], [], []
        for _ in range(per):
            i += 1
            ts = T0_NS + i * 250_000_000
            acme.append(span(i, "ac", [
                attr("gen_ai.operation.name", "chat"), attr("gen_ai.request.model", "gpt-4o"),
                attr("gen_ai.usage.input_tokens", 10), attr("gen_ai.usage.output_tokens", 3)], ts))
            rag.append(span(i, "b0", [
                attr("openinference.span.kind", "LLM"), attr("llm.model_name", "gpt-4.1-nano"),
                attr("llm.token_count.prompt", 7), attr("llm.token_count.completion", 2),
                attr("input.value", f"question {i}")], ts))
            noise.append(span(i, "c0", [attr("http.route", "/healthz")], ts))
        out.append(orjson.dumps({"resourceSpans": [
            resource([attr("service.name", "support-bot"), attr("tenant.id", "acme corp")],
                     acme + noise),
            resource([attr("service.name", "rag-worker")], rag)]}))
    return out


def test_otlp_json_batches_reach_events_table(worker_factory):
    w = worker_factory(COVERWATCH_INPUT_FORMAT="otel-genai", COVERWATCH_DETECTOR="burst",
                       COVERWATCH_EMBEDDER="none").start()
    s = w.settings
    good = batches()
    logs = orjson.dumps({"resourceLogs": [{"resource": {"attributes": [
        attr("service.name", "chat-api"), attr("tenant.id", "initech")]}, "scopeLogs": [{
            "logRecords": [{"timeUnixNano": str(T0_NS + k * 10**9), "traceId": f"{k:032x}",
                            "spanId": f"{k:016x}",
                            "eventName": "gen_ai.client.inference.operation.details",
                            "attributes": [attr("gen_ai.operation.name", "chat"),
                                           attr("gen_ai.usage.input_tokens", 100),
                                           attr("gen_ai.usage.output_tokens", 50)]}
                           for k in range(1, 6)]}]}]})
    bad = [b"\n\x0b\x12\x09protobuf", orjson.dumps({"hello": "world"})]
    produce_lines(good[:3] + bad[:1] + [logs] + good[3:] + bad[1:], s, s.topic_logs)
    n_good = 6 * 20 * 2 + 5
    w.wait_for(lambda m: m.get("coverwatch_events_detected_total", 0) >= n_good
               and m.get("coverwatch_dlq_total", 0) >= len(bad), what="all batches processed")

    rows = query(w, "SELECT tenant_id, count(), sum(input_tokens), sum(output_tokens), "
                    "any(model) FROM coverwatch.events FINAL GROUP BY tenant_id ORDER BY tenant_id")
    assert rows == [["acme corp", 120, 1200, 360, "gpt-4o"],
                    ["initech", 5, 500, 250, ""],
                    ["rag-worker", 120, 840, 240, "gpt-4.1-nano"]]
    assert query(w, "SELECT countIf(has_prompt), count() FROM coverwatch.events "
                    "WHERE tenant_id = 'rag-worker'") == [[120, 120]]
    dlq = consume_all(s, s.topic_dlq, len(bad))
    assert [d["reason"] for d in dlq] == ["adapter", "adapter"]
    assert all(d["detail"].startswith("otel-genai:") for d in dlq)
