"""Gateway adapters: vendor-shaped sample records (tests/fixtures) mapped field by field.

Each format: a realistic record, a redacted/absent-prompt record (still an event, marked in
metadata), a malformed record (dead-lettered with reason ``adapter`` or a contract reason),
and the tenant/credential options.
"""
from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import orjson
import pytest

from pipeline import build
from pipeline.adapters import ADAPTERS, bodies, get_adapter
from pipeline.adapters.common import hash_key, to_ms
from pipeline.contracts.events import REASONS, Rejected, validate
from pipeline.ingest import accept

FIX = Path(__file__).parent / "fixtures"
T0 = 1772366400000  # 2026-03-01T12:00:00Z


def raw(name: str) -> bytes:
    return (FIX / name).read_bytes()


def fixture(name: str):
    return json.loads(raw(name))


def run(fmt: str, data, **opts):
    """Adapter then contract validation, as the worker does; returns (events, rejections).
    Halves of calls the adapter holds for their other half are then released (the wait ran
    out), as replay does at the end of its files."""
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    adapter = get_adapter(fmt, **opts)
    events, bad = accept(payload, adapter, 384)
    for rec in getattr(adapter, "flush", list)():
        events.append(validate(rec, embedding_dim=384))
    return events, bad


def by_id(events):
    return {e.event_id: e for e in events}


def test_registry_and_reason():
    assert {"otel-genai", "litellm", "kong", "bedrock"} <= set(ADAPTERS)
    assert "adapter" in REASONS


# ---------------------------------------------------------------- shared helpers

@pytest.mark.parametrize("value, ms", [
    (1772366400, T0), (1772366400.25, T0 + 250), (T0, T0), (T0 * 1000 + 999, T0),
    ("1772366400000000000", T0), (1772366400123456789, T0 + 123),
    ("2026-03-01T12:00:00Z", T0), ("2026-03-01T13:00:00.5+01:00", T0 + 500),
])
def test_timestamps_normalised_to_epoch_ms(value, ms):
    assert to_ms(value, "x") == ms


@pytest.mark.parametrize("value", [None, True, "yesterday", "2026-03-01T12:00:00", {}])
def test_bad_timestamps_are_adapter_rejections(value):
    with pytest.raises(Rejected) as exc:
        to_ms(value, "x")
    assert exc.value.reason == "adapter"


@pytest.mark.parametrize("body, text", [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": [{"type": "text", "text": "c"},
                                                {"type": "image_url", "image_url": {}}]}]}, "c"),
    ({"model": "gpt-4.1", "input": "plain responses input"}, "plain responses input"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "r1"}]},
                {"type": "function_call_output", "output": "{}"}]}, "r1"),
    ({"input": ["emb one", "emb two"], "model": "text-embedding-3-small"}, "emb one\nemb two"),
    ({"system": "sys", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "anthropic q"},
        {"type": "tool_result", "tool_use_id": "t", "content": "x"}]}]}, "anthropic q"),
    ({"messages": [{"role": "user", "content": [{"text": "converse q"}, {"image": {}}]}],
      "system": [{"text": "s"}]}, "converse q"),
    ({"inputText": "titan q"}, "titan q"),
    ({"prompt": "<s>[INST] llama q [/INST]"}, "llama q"),          # chat template stripped
    ({"contents": [{"role": "user", "parts": [{"text": "gemini q"}]}]}, "gemini q"),
    ('{"messages": [{"role": "user", "content": "as a JSON string"}]}', "as a JSON string"),
    ([{"role": "user", "parts": [{"type": "text", "content": "otel parts"}]}], "otel parts"),
])
def test_body_parser_prompt_shapes(body, text):
    assert bodies.prompt_of(body).text == text


@pytest.mark.parametrize("body, missing", [
    (None, "not_logged"), ({}, "not_logged"), ({"input": [[1, 2, 3]]}, "no_text"),
    ({"messages": [{"role": "user", "content": "redacted-by-litellm"}]}, "redacted"),
    ('{"messages": [{"role": "us', "unparseable"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "no_text"),
])
def test_body_parser_says_why_there_is_no_prompt(body, missing):
    assert bodies.prompt_of(body) == bodies.Prompt(None, missing)


def test_body_parser_caps_long_prompts():
    p = bodies.prompt_of({"input": "x" * (bodies.PROMPT_MAX_CHARS + 10)})
    assert len(p.text) == bodies.PROMPT_MAX_CHARS and p.truncated


@pytest.mark.parametrize("body, usage", [
    ({"usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}, (10, 20)),
    ({"usage": {"input_tokens": 5, "output_tokens": 6}}, (5, 6)),
    ({"usage": {"inputTokens": 7, "outputTokens": 8, "totalTokens": 15}}, (7, 8)),
    ({"usage": {"prompt_tokens": 12, "total_tokens": 12}}, (12, None)),
    ({"inputTextTokenCount": 3, "results": [{"tokenCount": 4}]}, (3, 4)),
    ({"prompt_token_count": 9, "generation_token_count": 2}, (9, 2)),
    ('{"usage": {"input_tokens": 1, "output_tokens": 2}}', (1, 2)),
    (None, (None, None)),
])
def test_body_parser_usage_shapes(body, usage):
    assert bodies.usage_of(body) == usage


# ---------------------------------------------------------------- otel-genai

def test_otel_spans_field_by_field():
    events, bad = run("otel-genai", raw("otel_genai_spans.json"))
    assert bad == []
    ev = by_id(events)
    # 9 spans: an HTTP server span, an execute_tool span and an OpenInference CHAIN are skipped
    assert len(ev) == 5
    chat = ev["5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174"]
    assert (chat.ts_ms, chat.tenant_id, chat.model, chat.endpoint) == (
        T0, "acme-corp", "gpt-4o-mini", "chat")
    assert (chat.input_tokens, chat.output_tokens, chat.latency_ms, chat.status) == (
        57, 12, 1234.0, 200)
    assert chat.prompt == "How do I reset my password?"
    assert chat.api_key_id is None
    assert chat.metadata["provider"] == "openai"
    assert chat.metadata["response_id"] == "chatcmpl-Bx1"
    assert chat.metadata["conversation_id"] == "conv-881"
    assert chat.metadata["finish_reasons"] == ["stop"]
    assert chat.metadata["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert chat.metadata["prompt_present"] is True

    emb = ev["0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"]
    assert (emb.endpoint, emb.model, emb.input_tokens, emb.output_tokens) == (
        "embeddings", "text-embedding-3-small", 8, None)
    assert emb.prompt is None and emb.metadata["prompt_missing"] == "not_logged"

    old = ev["4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"]  # OpenLLMetry, older names
    assert (old.tenant_id, old.model, old.endpoint) == ("rag-worker", "gpt-4-turbo", "chat")
    assert (old.input_tokens, old.output_tokens, old.latency_ms) == (120, 30, 2500.0)
    assert old.prompt == "Summarise the refund policy."

    err = ev["4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b8"]
    assert err.status == 429 and err.metadata["error_type"] == "RateLimitError"

    oi = ev["c0ffee00000000000000000000000001-1111111111111111"]  # OpenInference (Envoy AI GW)
    assert (oi.tenant_id, oi.model, oi.endpoint) == ("globex", "gpt-4.1-nano", "llm")
    assert (oi.input_tokens, oi.output_tokens, oi.status) == (24, 7, 200)
    assert oi.prompt == "Translate 'good morning' into French."
    assert oi.metadata["user_id"] == "u-42"


def test_otel_logs_details_event_and_legacy_message_events():
    events, bad = run("otel-genai", raw("otel_genai_logs.json"))
    assert bad == []
    ev = by_id(events)
    assert len(ev) == 2  # the plain application log is skipped; 3 legacy events -> 1 call
    d = ev["aaaabbbbccccdddd0000111122223333-0123456789abcdef"]
    assert (d.ts_ms, d.tenant_id, d.model, d.endpoint) == (
        T0 + 10_000, "initech", "gemini-2.5-flash", "generate_content")
    assert (d.input_tokens, d.output_tokens) == (33, 210)
    assert d.prompt == "List the prime numbers below 30."
    legacy = ev["99990000aaaabbbbccccddddeeeeffff-fedcba9876543210"]
    assert (legacy.tenant_id, legacy.ts_ms) == ("legacy-assistant", T0 + 11_000)
    assert legacy.prompt == "Write a haiku about Kafka."
    assert legacy.metadata["signal"] == "log-events"


def test_otel_redacted_and_absent_content_still_events():
    doc = fixture("otel_genai_spans.json")
    oi_span = doc["resourceSpans"][2]["scopeSpans"][0]["spans"][0]
    for a in oi_span["attributes"]:       # OPENINFERENCE_HIDE_INPUTS=true
        if a["key"] in ("input.value", "llm.input_messages.0.message.content"):
            a["value"] = {"stringValue": "__REDACTED__"}
    events, bad = run("otel-genai", {"resourceSpans": [doc["resourceSpans"][2]]})
    assert bad == [] and len(events) == 1
    e = events[0]
    assert e.prompt is None and (e.input_tokens, e.output_tokens) == (24, 7)
    assert e.metadata["prompt_redacted"] is True and e.metadata["prompt_present"] is False
    assert e.metadata["prompt_missing"] == "redacted"


def test_otel_tenant_and_key_options():
    events, _ = run("otel-genai", raw("otel_genai_spans.json"), tenant_field="service.name",
                    key_field="user.id")
    ev = by_id(events)
    assert {e.tenant_id for e in events} == {"support-bot", "rag-worker", "envoy-ai-gateway"}
    oi = ev["c0ffee00000000000000000000000001-1111111111111111"]
    assert oi.api_key_id == hash_key("u-42")
    events, bad = run("otel-genai", raw("otel_genai_spans.json"), tenant_field="nope")
    assert events == [] and {r.reason for _, r in bad} == {"adapter"}
    events, _ = run("otel-genai", raw("otel_genai_spans.json"), tenant_field="nope",
                    default_tenant="single")
    assert {e.tenant_id for e in events} == {"single"}


def test_otel_malformed_records():
    events, bad = run("otel-genai", b"\n\x0b\x12\x09resource")  # otlp_proto, not otlp_json
    assert events == [] and bad[0][1].reason == "adapter" and "otlp_json" in bad[0][1].detail
    events, bad = run("otel-genai", {"spans": []})
    assert bad[0][1].reason == "adapter"
    assert run("otel-genai", {"resourceSpans": []}) == ([], [])
    # one GenAI span without a start time: only that span is dead-lettered
    doc = fixture("otel_genai_spans.json")
    del doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"]
    events, bad = run("otel-genai", doc)
    assert len(events) == 4 and len(bad) == 1
    rec, r = bad[0]
    assert r.reason == "adapter" and orjson.loads(rec)["spanId"] == "eee19b7ec3c1b174"


# ---------------------------------------------------------------- litellm

def test_litellm_payload_field_by_field():
    [e], bad = run("litellm", raw("litellm_payload.json"))
    assert bad == []
    assert e.event_id == "chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f"
    assert (e.ts_ms, e.tenant_id, e.model, e.endpoint) == (
        T0 + 285, "team-acme", "gpt-4o", "/chat/completions")
    key = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
    assert e.api_key_id == hash_key(key) and len(e.api_key_id) == 16
    assert (e.input_tokens, e.output_tokens, e.status) == (10, 20, 200)
    assert e.latency_ms == 1794.0  # endTime - startTime, not response_time (TTFT)
    assert (e.client_ip, e.user_agent) == ("203.0.113.9", None)
    assert e.prompt == "Hello, world!"  # last user turn, text parts only
    m = e.metadata
    assert (m["source_format"], m["trace_id"], m["provider"], m["cost"]) == (
        "litellm", "97311c60-9a61-4f48-a814-70139ee57868", "openai", 0.000225)
    assert m["key_alias"] == "acme-prod" and m["request_tags"] == ["prod"]


def test_litellm_array_and_ndjson_batches():
    events, bad = run("litellm", raw("litellm_array.json"))
    assert bad == []
    ev = by_id(events)
    assert [e.tenant_id for e in events] == ["team-globex", "team-globex", "org-initech"]
    assert ev["emb-b2"].prompt == "what is a b-tree\nhow do skip lists work"
    assert (ev["emb-b2"].endpoint, ev["emb-b2"].input_tokens) == ("/embeddings", 12)
    assert ev["fail-c3"].status == 429 and ev["fail-c3"].metadata["error_class"] == (
        "RateLimitError")
    assert ev["chatcmpl-a1"].metadata["end_user"] == "cust-991"
    events, bad = run("litellm", raw("litellm_batch.ndjson"))
    assert bad == [] and [(e.event_id, e.prompt) for e in events] == [
        ("nd-1", "first"), ("nd-2", "second")]


def test_litellm_redacted_prompt():
    [e], bad = run("litellm", raw("litellm_redacted.json"))
    assert bad == [] and e.prompt is None
    assert (e.input_tokens, e.output_tokens, e.model) == (18, 5, "gpt-4o-mini")
    assert e.metadata["prompt_redacted"] is True and e.metadata["prompt_missing"] == "redacted"


def test_litellm_options_and_malformed():
    [e], _ = run("litellm", raw("litellm_payload.json"),
                 tenant_field="metadata.user_api_key_org_id",
                 key_field="metadata.user_api_key_alias", key_salt="s3cret")
    assert e.tenant_id == "org-7" and e.api_key_id == hash_key("acme-prod", b"s3cret")
    assert e.api_key_id != hash_key("acme-prod")
    _, bad = run("litellm", {"id": "x", "messages": []})
    assert bad[0][1].reason == "adapter" and bad[0][1].detail.startswith("litellm:")
    _, bad = run("litellm", b'{"id": "x", "startTime": ')
    assert bad[0][1].reason == "invalid_json"
    p = fixture("litellm_payload.json")
    p["startTime"] = "last tuesday"
    _, bad = run("litellm", p)
    assert bad[0][1].reason == "adapter"
    # one bad payload in a batch: the others still become events
    batch = fixture("litellm_array.json")
    batch[1]["metadata"] = {}
    events, bad = run("litellm", batch)
    assert [e.event_id for e in events] == ["chatcmpl-a1", "fail-c3"]
    assert len(bad) == 1 and orjson.loads(bad[0][0])["id"] == "emb-b2"
    assert "no tenant" in bad[0][1].detail


# ---------------------------------------------------------------- kong

def test_kong_current_format_field_by_field():
    [e], bad = run("kong", raw("kong_ai_proxy.json"))
    assert bad == []
    assert (e.event_id, e.ts_ms) == ("2a17b1c4e8d35b66b9e0f4d1a0c3d7e2", T0 + 100_010)
    assert (e.tenant_id, e.api_key_id) == (
        "tenant-acme", hash_key("0f1e2d3c-4b5a-4968-8776-655443322110"))
    assert (e.model, e.endpoint, e.status, e.latency_ms) == ("gpt-4o", "/openai/chat", 200, 1440.0)
    assert (e.input_tokens, e.output_tokens) == (17, 9)
    assert (e.client_ip, e.user_agent) == ("203.0.113.50", "OpenAI/Python 1.54.3")
    assert e.prompt == "What is 1 + 1?"
    m = e.metadata
    assert (m["provider"], m["response_model"], m["llm_latency_ms"], m["route"]) == (
        "openai", "gpt-4o-2024-08-06", 1426, "openai-chat")


def test_kong_old_format_singular_token_names():
    [e], bad = run("kong", raw("kong_ai_proxy_old.json"))
    assert bad == []
    assert e.event_id == "71f1e05dc3a3d0466bc1e35f7bd0ba40"  # response x-kong-request-id
    assert (e.tenant_id, e.model, e.endpoint) == ("globex", "command", "/cohere/chat")
    assert (e.input_tokens, e.output_tokens) == (28, 20)
    assert (e.client_ip, e.user_agent) == ("198.51.100.23", "python-requests/2.32.3")
    assert e.prompt == "What is the capital of France?"


def test_kong_without_payloads_or_statistics():
    r = fixture("kong_ai_proxy.json")
    del r["ai"]["proxy"]["payload"]               # log_payloads=false (the default)
    [e], _ = run("kong", r)
    assert e.prompt is None and e.input_tokens == 17
    assert e.metadata["prompt_redacted"] is True and e.metadata["prompt_missing"] == "not_logged"
    del r["ai"]                                    # log_statistics=false too
    [e], _ = run("kong", r)
    assert (e.tenant_id, e.status, e.input_tokens) == ("tenant-acme", 200, None)
    assert e.metadata["ai_statistics"] is False


def test_kong_options_batch_and_malformed():
    [e], _ = run("kong", raw("kong_ai_proxy.json"), tenant_field="workspace_name")
    assert e.tenant_id == "default"
    batch = [fixture("kong_ai_proxy.json"), fixture("kong_ai_proxy_old.json")]  # http-log queue
    events, bad = run("kong", batch)
    assert bad == [] and [e.tenant_id for e in events] == ["tenant-acme", "globex"]
    _, bad = run("kong", {"message": "not a kong log"})
    assert bad[0][1].reason == "adapter" and bad[0][1].detail.startswith("kong:")
    r = fixture("kong_ai_proxy.json")
    r["ai"]["proxy"]["payload"]["request"] = '{"model":"gpt-4o","messages":[{"role":"us'
    [e], _ = run("kong", r)                        # payload truncated by Kong: still an event
    assert e.prompt is None and e.metadata["prompt_missing"] == "unparseable"
    r["started_at"] = 5                            # 1970: the contract rejects it
    _, bad = run("kong", r)
    assert bad[0][1].reason == "out_of_range"


# ---------------------------------------------------------------- bedrock

def test_bedrock_converse_field_by_field():
    [e], bad = run("bedrock", raw("bedrock_invocation.json"))
    assert bad == []
    assert (e.event_id, e.ts_ms) == ("3f0c2d5e-8a7b-4c61-9d2e-1b0a9f8e7d6c", T0 + 600_000)
    assert e.tenant_id == "acme-corp"   # requestMetadata.tenant_id
    assert e.api_key_id == hash_key("arn:aws:sts::111122223333:assumed-role/support-bot-role")
    assert (e.model, e.endpoint, e.status) == (
        "anthropic.claude-3-5-haiku-20241022-v1:0", "Converse", 200)
    assert (e.input_tokens, e.output_tokens, e.latency_ms) == (38, 9, 612.0)
    assert e.prompt == "And in Fahrenheit?"
    assert (e.client_ip, e.user_agent) == (None, None)
    assert e.metadata["region"] == "us-east-1" and e.metadata["account_id"] == "111122223333"


def test_bedrock_invoke_model_anthropic_body():
    [e], _ = run("bedrock", raw("bedrock_invoke_anthropic.json"))
    assert e.tenant_id == "444455556666"          # the identity ARN's account
    assert e.api_key_id == hash_key("arn:aws:iam::444455556666:user/batch-exporter")
    assert e.prompt == "Classify: 'my card was charged twice'"
    assert (e.input_tokens, e.output_tokens, e.ts_ms) == (21, 2, T0 + 690_250)
    [e], _ = run("bedrock", raw("bedrock_invoke_anthropic.json"), tenant_field="identity.role")
    assert e.tenant_id == "batch-exporter"


@pytest.mark.parametrize("wrap", [
    lambda b: b,                                   # already unpacked JSON
    gzip.compress,                                 # gzip (Firehose / Lambda)
    lambda b: base64.b64encode(gzip.compress(b)),  # Kinesis record data
])
def test_bedrock_cloudwatch_envelope(wrap):
    events, bad = run("bedrock", wrap(raw("bedrock_cloudwatch_envelope.json")))
    assert bad == []
    offloaded, throttled = events
    assert (offloaded.model, offloaded.input_tokens, offloaded.output_tokens) == (
        "amazon.titan-text-express-v1", 30211, 180)
    assert offloaded.prompt is None
    assert offloaded.metadata["prompt_missing"] == "offloaded_to_s3"
    assert (throttled.status, throttled.endpoint) == (429, "ConverseStream")
    assert throttled.metadata["error_code"] == "ThrottlingException"
    assert offloaded.tenant_id == throttled.tenant_id == "111122223333"
    assert offloaded.api_key_id == hash_key(
        "arn:aws:sts::111122223333:assumed-role/rag-indexer")


def test_bedrock_text_delivery_off_and_malformed():
    r = fixture("bedrock_invocation.json")
    del r["input"]["inputBodyJson"], r["output"]["outputBodyJson"]  # textDataDeliveryEnabled off
    [e], _ = run("bedrock", r)
    assert e.prompt is None and (e.input_tokens, e.output_tokens) == (38, 9)
    assert e.metadata["prompt_redacted"] is True
    assert run("bedrock", {"messageType": "CONTROL_MESSAGE", "logEvents": []}) == ([], [])
    _, bad = run("bedrock", {"schemaType": "ModelInvocationLog", "requestId": "x"})
    assert bad[0][1].reason == "adapter" and bad[0][1].detail.startswith("bedrock:")
    _, bad = run("bedrock", b"H4sI!!!not-base64")
    assert bad[0][1].reason == "adapter"
    env = fixture("bedrock_cloudwatch_envelope.json")
    env["logEvents"][0]["message"] = "{truncated"
    events, bad = run("bedrock", env)
    assert len(events) == 1 and bad[0][1].reason == "adapter"


# ---------------------------------------------------------------- options, privacy

@pytest.mark.parametrize("fmt", ["otel-genai", "litellm", "kong", "bedrock"])
def test_unknown_option_names_the_allowed_ones(fmt):
    with pytest.raises(SystemExit, match="allowed: tenant_field, key_field"):
        get_adapter(fmt, tenant_feild="x")
    with pytest.raises(SystemExit):
        get_adapter(fmt, tenant_field=7)


def test_options_come_from_settings_json():
    from pipeline.settings import Settings
    s = Settings(input_format="kong", adapter_options='{"tenant_field": ["consumer.id"]}')
    [e] = build.adapter(s)(raw("kong_ai_proxy.json"))
    assert e["tenant_id"] == "c2d3e4f5-1111-4222-8333-944455566677"


@pytest.mark.parametrize("fmt, name, secret", [
    ("litellm", "litellm_payload.json",
     "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"),
    ("kong", "kong_ai_proxy.json", "0f1e2d3c-4b5a-4968-8776-655443322110"),
    ("bedrock", "bedrock_invocation.json", "support-bot-role"),
])
def test_credentials_never_stored_as_given(fmt, name, secret):
    events, _ = run(fmt, raw(name))
    for e in events:
        assert secret not in orjson.dumps(e.to_dict()).decode()



def test_wrong_typed_sections_cost_nothing_or_get_the_adapter_reason():
    r = fixture("kong_ai_proxy.json")
    r["ai"]["proxy"]["usage"] = "n/a"              # optional section of the wrong type
    [e], bad = run("kong", r)
    assert bad == [] and e.prompt == "What is 1 + 1?"
    assert e.input_tokens == 17                    # from the logged response body instead
    p = fixture("litellm_payload.json")
    p["request_tags"] = "prod"
    assert run("litellm", p)[1] == []
    doc = fixture("otel_genai_spans.json")
    doc["resourceSpans"][0]["scopeSpans"] = "broken"  # structure broken: adapter, not a crash
    events, bad = run("otel-genai", doc)
    assert events == [] and bad[0][1].reason == "adapter"


# ---------------------------------------------------------------- records as gateways write them
# Issue 16. Where each fixture's shape comes from:
# - otel_openai_v2_{span,logs}.json: opentelemetry-instrumentation-openai-v2 (2.x) with
#   OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true: the chat span carries model and
#   usage, the prompt goes out as gen_ai.*.message / gen_ai.choice log events (eventName,
#   body {content}) with the span's trace and span id; the SDK exports spans and logs in
#   separate OTLP batches, so the collector's kafka exporter writes two records.
# - litellm_v1_payload.json: GenericAPILogger with litellm.generic_api_use_v1 = True, which
#   str()s every value (naive datetime, Python-repr metadata/messages, Usage(...) repr).
# - litellm_gcs_truncated.json: StandardLoggingPayload after the DataDog / GCS loggers cut
#   long fields, ``str(messages)[:N] + "...truncated by litellm"``; metadata.user_agent as
#   in current StandardLoggingMetadata.
# - litellm_callback_redacted.json: per-callback redaction (turn_off_message_logging on one
#   callback), which writes an assistant message "redacted-by-litellm".
# - kong_36_ai.json: Kong 3.6 AI Proxy log (ai.meta / ai.usage / ai.payload directly under
#   ai, singular prompt_token / completion_token), consumer entity with created_at (s).
# - kong_no_consumer.json: a route without an auth plugin (no consumer, no
#   authenticated_entity) whose caller let the route pick the model (request_model
#   UNSPECIFIED in 3.8+ ai.proxy.meta).
# - bedrock_llama_siem.json: ModelInvocationLog of a Llama 3.1 InvokeModel call (prompt with
#   the Llama 3 chat template), timestamp as a SIEM export rewrites it (no zone).

def test_otel_span_and_message_events_of_one_call_merge_in_either_order():
    span, logs = raw("otel_openai_v2_span.json"), raw("otel_openai_v2_logs.json")
    for first, second in ((logs, span), (span, logs)):
        adapter = get_adapter("otel-genai")
        adapter.offline()                       # replay: hold until the other half comes
        a, bad_a = accept(first, adapter, 384)
        b, bad_b = accept(second, adapter, 384)
        assert bad_a == bad_b == [] and a == [] and adapter.flush() == []
        [e] = b
        assert e.event_id == "7d3e1f0a9b8c4d2e8f7a6b5c4d3e2f10-a1b2c3d4e5f60718"
        assert (e.tenant_id, e.model, e.endpoint) == ("umbrella", "gpt-4o-mini", "chat")
        assert (e.input_tokens, e.output_tokens, e.latency_ms) == (31, 142, 1850.0)
        assert e.ts_ms == T0 + 300_000                       # the span's start
        assert e.prompt == "How do I export my invoices as CSV?"
        assert e.metadata["signal"] == "span+log-events"
        assert e.metadata["prompt_present"] is True and "prompt_missing" not in e.metadata
        assert e.metadata["response_id"] == "chatcmpl-AZ7q1"


def test_otel_halves_in_a_stream_wait_a_bounded_time():
    adapter = get_adapter("otel-genai", part_wait_s=10)
    logs, span = fixture("otel_openai_v2_logs.json"), fixture("otel_openai_v2_span.json")
    assert accept(orjson.dumps(logs), adapter, 384) == ([], [])      # the prompt half waits
    [e], _ = accept(orjson.dumps(span), adapter, 384)
    assert e.prompt and e.model == "gpt-4o-mini"
    # this tenant sends message events: its next prompt-less span waits for them too ...
    s2 = span["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    s2["spanId"], s2["startTimeUnixNano"] = "b1b2c3d4e5f60719", "1772366720000000000"
    assert accept(orjson.dumps(span), adapter, 384) == ([], [])
    # ... but not for ever: a half 10 s of event time later releases it alone
    s2["spanId"], s2["startTimeUnixNano"] = "c1b2c3d4e5f6071a", "1772366731000000000"
    [alone], _ = accept(orjson.dumps(span), adapter, 384)
    assert alone.event_id.endswith("b1b2c3d4e5f60719") and alone.prompt is None
    assert alone.metadata["signal"] == "span" and alone.model == "gpt-4o-mini"
    assert adapter.due() == []                    # nothing else is due yet
    assert [r["event_id"][-4:] for r in adapter.flush()] == ["071a"]
    # a tenant that never sent message events: its spans are not held at all
    fresh = get_adapter("otel-genai")
    assert len(accept(raw("otel_genai_spans.json"), fresh, 384)[0]) == 5


def test_litellm_v1_payload_where_every_value_is_a_string():
    [e], bad = run("litellm", raw("litellm_v1_payload.json"))
    assert bad == []
    assert e.ts_ms == 1737710446847                  # 2025-01-24T09:20:46.847Z: read as UTC
    assert e.latency_ms == 1276.0
    assert (e.tenant_id, e.model, e.endpoint) == ("team-billing", "gpt-4o", "acompletion")
    assert (e.input_tokens, e.output_tokens) == (31, 42)       # from the Usage(...) repr
    assert e.prompt == "What's the refund window for annual plans?"
    assert (e.client_ip, e.user_agent) == ("198.51.100.4", "OpenAI/Python 1.59.7")
    assert e.api_key_id == hash_key(
        "5ff1c0ab94f0e8d6a6e07f1dbb3d3a1fd0b0e38c0ff1b7b1cde0a3b4f0f1a2b3")
    assert e.metadata["key_alias"] == "billing-bot"


def test_litellm_truncated_repr_messages_and_user_agent():
    [e], bad = run("litellm", raw("litellm_gcs_truncated.json"))
    assert bad == []
    assert e.prompt.startswith("Summarise the following paper in five bullet points")
    assert e.prompt.endswith("dispensing with recurrence and convolutions entirely")
    assert e.metadata["prompt_truncated"] is True and e.metadata["prompt_present"] is True
    assert e.user_agent == "langchain-openai/0.3.9"              # metadata.user_agent
    assert (e.tenant_id, e.input_tokens, e.latency_ms) == ("team-research", 5812, 6375.0)


def test_litellm_per_callback_redaction_is_redacted_not_absent():
    [e], bad = run("litellm", raw("litellm_callback_redacted.json"))
    assert bad == [] and e.prompt is None
    assert e.metadata["prompt_missing"] == "redacted"
    assert e.user_agent == "OpenAI/NodeJS 4.77.0"                # top-level user_agent


def test_kong_36_layout_and_consumer_creation_time():
    [e], bad = run("kong", raw("kong_36_ai.json"))
    assert bad == []
    assert (e.tenant_id, e.model, e.endpoint) == ("tenant-hooli", "gpt-4o", "/openai/chat")
    assert (e.input_tokens, e.output_tokens, e.latency_ms) == (26, 61, 1562.0)
    assert e.prompt == "Count orders per day in the last week."
    assert e.metadata["provider"] == "openai" and "tenant_fallback" not in e.metadata
    rec = get_adapter("kong")(raw("kong_36_ai.json"))[0]
    assert rec["account_created_at"] == 1767225600000           # consumer.created_at (s)


def test_kong_without_consumer_and_unspecified_model():
    [e], bad = run("kong", raw("kong_no_consumer.json"))
    assert bad == []
    assert e.model == "gpt-4o-mini-2024-07-18"                   # not "UNSPECIFIED"
    assert e.tenant_id == "default" and e.metadata["tenant_fallback"] is True
    assert e.api_key_id is None and e.prompt == "Give me three names for a bakery."
    [e], _ = run("kong", raw("kong_no_consumer.json"), default_tenant="anonymous-web")
    assert e.tenant_id == "anonymous-web"
    [e], _ = run("kong", raw("kong_no_consumer.json"),
                 tenant_field=["consumer.custom_id", "consumer.username", "client_ip"])
    assert e.tenant_id == "203.0.113.200"                       # one tenant per address
    assert "account_created_at" not in get_adapter("kong")(raw("kong_no_consumer.json"))[0]


def test_bedrock_llama_template_and_zone_less_timestamp():
    [e], bad = run("bedrock", raw("bedrock_llama_siem.json"))
    assert bad == []
    assert e.ts_ms == T0 + 900_250                               # read as UTC
    assert e.prompt == "How long should I rest a steak after grilling?"
    assert (e.tenant_id, e.model, e.input_tokens, e.output_tokens) == (
        "777788889999", "meta.llama3-1-70b-instruct-v1:0", 41, 57)


def test_zone_less_timestamps_are_utc_only_where_the_gateway_writes_utc():
    assert to_ms("2025-01-24 09:20:46.847371", "litellm", naive_utc=True) == 1737710446847
    assert to_ms("2026-03-01T12:00:00", "bedrock", naive_utc=True) == T0
    with pytest.raises(Rejected):
        to_ms("2026-03-01T12:00:00", "kong")                     # ambiguous elsewhere


GATEWAY_RECORDS = {
    "otel-genai": (["otel_openai_v2_span.json", "otel_openai_v2_logs.json",
                    "otel_genai_spans.json", "otel_genai_logs.json"], 1 + 3 + 2),
    "litellm": (["litellm_v1_payload.json", "litellm_gcs_truncated.json",
                 "litellm_callback_redacted.json", "litellm_payload.json"], 3),
    "kong": (["kong_36_ai.json", "kong_no_consumer.json", "kong_ai_proxy.json",
              "kong_ai_proxy_old.json"], 4),
    "bedrock": (["bedrock_llama_siem.json", "bedrock_invocation.json",
                 "bedrock_invoke_anthropic.json"], 3),
}


@pytest.mark.parametrize("fmt", sorted(GATEWAY_RECORDS))
def test_replay_of_gateway_records_rejects_none_and_keeps_every_prompt(fmt, tmp_path):
    """Each fixture as one JSONL line, through ``coverwatch replay --input-format``."""
    from pipeline.replay import read_events
    from pipeline.settings import Settings
    names, with_prompt = GATEWAY_RECORDS[fmt]
    log = tmp_path / "gateway.jsonl"
    log.write_bytes(b"".join(orjson.dumps(fixture(n)) + b"\n" for n in names))
    events, rejected = read_events([log], 384, build.adapter(Settings(input_format=fmt)))
    assert sum(rejected.values()) == 0
    assert len({e.event_id for e in events}) == len(events)      # one event per call
    assert sum(e.prompt is not None for e in events) == with_prompt
