"""``otel-genai``: OTLP JSON from the collector's Kafka exporter -> contract events.

One Kafka record is one export batch (``resourceSpans`` or ``resourceLogs``) holding many
spans or log records, most of them not model calls; each GenAI call becomes one event and
everything else is skipped. Attribute names come in three generations and all are read:
current GenAI semconv (``gen_ai.usage.input_tokens``, ``gen_ai.input.messages``), older
ones (``gen_ai.usage.prompt_tokens``, ``gen_ai.prompt.0.content``, ``gen_ai.system``) and
OpenInference (``llm.token_count.prompt``, ``llm.input_messages.0.message.content``,
``input.value``). Content capture is off by default in OTel, so most events carry no prompt.

Options name *attribute keys* (span/log attributes first, then resource attributes); the
default tenant is ``tenant.id``, then LiteLLM's team/org attributes, then ``service.name``.
Only ``otlp_json`` is readable; the exporter's default ``otlp_proto`` is rejected with a hint.

>>> span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "chat gpt-4o",
...   "startTimeUnixNano": "1772366400000000000", "endTimeUnixNano": "1772366401500000000",
...   "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
...                  {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}}]}
>>> batch = {"resourceSpans": [{"resource": {"attributes": [
...   {"key": "service.name", "value": {"stringValue": "support-bot"}}]},
...   "scopeSpans": [{"spans": [span]}]}]}
>>> import orjson
>>> [e] = make()(orjson.dumps(batch))
>>> e["tenant_id"], e["endpoint"], e["input_tokens"], e["latency_ms"]
('support-bot', 'chat', 42, 1500.0)
"""
from __future__ import annotations

from typing import Any

from pipeline.adapters import bodies
from pipeline.adapters.common import (build, count, digest_id, http_status, map_all, options,
                                      reject, shape_guard)
from pipeline.contracts.events import Rejected, decode_json

FORMAT = "otel-genai"
TENANT_FIELDS = ("tenant.id", "metadata.user_api_key_team_id", "metadata.user_api_key_org_id",
                 "service.name")
KEY_FIELDS = ("metadata.user_api_key_hash",)
NOT_CALLS = {"execute_tool", "invoke_agent", "create_agent", "retrieval", "invoke_workflow"}
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
MESSAGE_EVENTS = {"gen_ai.system.message", "gen_ai.user.message", "gen_ai.assistant.message",
                  "gen_ai.tool.message", "gen_ai.choice"}
_FIRST = {  # contract field -> attribute names, first present wins
    "model": ("gen_ai.request.model", "gen_ai.response.model", "llm.request.model_name",
              "llm.model_name", "llm.response.model_name"),
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                     "llm.token_count.prompt", "llm.usage.prompt_tokens"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                      "llm.token_count.completion", "llm.usage.completion_tokens"),
    "provider": ("gen_ai.provider.name", "gen_ai.system", "gen_ai.model.provider",
                 "llm.provider", "llm.system"),
    "cost": ("gen_ai.usage.cost", "llm.cost.total"),
}


def any_value(v: Any) -> Any:
    """OTLP JSON AnyValue -> plain Python (``intValue`` arrives as a string)."""
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return count(v["intValue"]) if str(v["intValue"]).lstrip("-").isdigit() else None
    if "arrayValue" in v:
        return [any_value(x) for x in (v["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in v:
        return attributes((v["kvlistValue"] or {}).get("values"))
    for k in ("doubleValue", "boolValue", "bytesValue"):
        if k in v:
            return v[k]
    return None


def attributes(kvs: Any) -> dict:
    if not isinstance(kvs, list):
        return {}
    return {kv["key"]: any_value(kv.get("value")) for kv in kvs
            if isinstance(kv, dict) and isinstance(kv.get("key"), str)}


def _pick(a: dict, field: str) -> Any:
    for name in _FIRST[field]:
        if a.get(name) not in (None, ""):
            return a[name]
    return None


def _indexed(a: dict, prefix: str) -> list[dict]:
    """Flattened ``prefix.{i}.role|content`` attributes (OpenLLMetry, OpenInference) -> list."""
    msgs: dict[int, dict] = {}
    for k, v in a.items():
        if not k.startswith(prefix):
            continue
        idx, _, rest = k[len(prefix):].partition(".")
        if not idx.isdigit():
            continue
        m = msgs.setdefault(int(idx), {})
        leaf = rest.rsplit(".", 1)[-1]
        if leaf == "role":
            m["role"] = v
        elif leaf in ("content", "text") and isinstance(v, str):
            m.setdefault("parts", []).append(v)
    return [{"role": m.get("role", "user"), "content": "\n".join(m.get("parts", []))}
            for _, m in sorted(msgs.items())]


def prompt_from(a: dict) -> bodies.Prompt:
    """The prompt from whichever content attribute this instrumentation wrote."""
    for key in ("gen_ai.input.messages", "gen_ai.prompt", "gen_ai.prompt_json"):
        if a.get(key) not in (None, "", []):
            return bodies.prompt_of(a[key])
    for prefix in ("gen_ai.prompt.", "llm.input_messages."):
        msgs = _indexed(a, prefix)
        if msgs:
            return bodies.prompt_of(msgs)
    v = a.get("input.value")
    if isinstance(v, str) and v:
        p = bodies.prompt_of(v) if a.get("input.mime_type") == "application/json" else None
        return p if p and p.missing != "unparseable" else bodies.text_prompt(v)
    return bodies.Prompt(None, "not_logged")


def _is_call(a: dict) -> bool:
    op = a.get("gen_ai.operation.name")
    if op is not None:
        return op not in NOT_CALLS
    kind = a.get("openinference.span.kind")
    if kind is not None:
        return str(kind).upper() in ("LLM", "EMBEDDING")
    return any(a.get(k) is not None for k in _FIRST["model"] + _FIRST["input_tokens"])


# error.type is usually the SDK's exception class (OpenAI and Anthropic SDKs share these).
ERROR_STATUS = {"BadRequestError": 400, "AuthenticationError": 401, "PermissionDeniedError": 403,
                "NotFoundError": 404, "APITimeoutError": 408, "timeout": 408,
                "UnprocessableEntityError": 422, "RateLimitError": 429,
                "InternalServerError": 500, "APIConnectionError": 503}


def _status(a: dict, code: Any) -> int:
    """HTTP status if recorded, else derived: error -> its class's status or 500, else 200."""
    s = http_status(a.get("http.response.status_code"))
    if s:
        return s
    err = a.get("error.type")
    if code in (2, "STATUS_CODE_ERROR") or err:
        return http_status(err) or ERROR_STATUS.get(str(err), 500)
    return 200


def _event(o, *, a: dict, res: dict, rec: dict, ts: Any, prompt, latency=None, code=None,
           signal: str, event_id: str | None = None) -> dict:
    def lookup(key: str) -> Any:
        v = a.get(key)
        return v if v not in (None, "") else res.get(key)
    kind = a.get("openinference.span.kind")
    return build(
        o, event_id=event_id or _ids(rec) or digest_id(rec), ts=ts, lookup=lookup,
        prompt=prompt, model=_pick(a, "model"),
        endpoint=a.get("gen_ai.operation.name") or a.get("llm.request.type")
        or (str(kind).lower() if kind else None) or rec.get("name"),
        input_tokens=count(_pick(a, "input_tokens")),
        output_tokens=count(_pick(a, "output_tokens")),
        latency_ms=latency, status=_status(a, code),
        client_ip=a.get("client.address"), user_agent=a.get("user_agent.original"),
        meta={"signal": signal, "trace_id": rec.get("traceId"), "span_id": rec.get("spanId"),
              "provider": _pick(a, "provider"), "response_id": a.get("gen_ai.response.id"),
              "conversation_id": a.get("gen_ai.conversation.id") or a.get("session.id"),
              "user_id": a.get("user.id") or a.get("enduser.id"),
              "finish_reasons": a.get("gen_ai.response.finish_reasons"),
              "cost": _pick(a, "cost"), "error_type": a.get("error.type"),
              "server_address": a.get("server.address"),
              "service_name": res.get("service.name")})


def _ids(rec: dict) -> str | None:
    t, s = rec.get("traceId") or "", rec.get("spanId") or ""
    return f"{t}-{s}" if t and s else None


def _scopes(resource_item: dict, key: str, legacy: str) -> list:
    return resource_item.get(key) or resource_item.get(legacy) or []


def _span_content(a: dict, events: Any) -> None:
    """Older instrumentations put content in span events rather than attributes."""
    for ev in events if isinstance(events, list) else []:
        name = ev.get("name") if isinstance(ev, dict) else None
        ea = attributes(ev.get("attributes")) if name else {}
        if name in ("gen_ai.content.prompt", DETAILS_EVENT):
            for k, v in ea.items():
                a.setdefault(k, v)
        elif name == "gen_ai.user.message" and isinstance(ea.get("content"), str):
            a["input.value"] = ea["content"]          # the last user message wins


def _span(o, res: dict, span: dict) -> dict | None:
    a = attributes(span.get("attributes"))
    if not _is_call(a):
        return None
    _span_content(a, span.get("events"))
    start, end = span.get("startTimeUnixNano"), span.get("endTimeUnixNano")
    try:
        latency = (int(end) - int(start)) / 1e6 if start and end else None
    except (TypeError, ValueError):
        latency = None
    return _event(o, a=a, res=res, rec=span, ts=start, prompt=prompt_from(a), signal="span",
                  latency=latency if latency is not None and latency >= 0 else None,
                  code=(span.get("status") or {}).get("code"))


def _log_ts(rec: dict) -> Any:
    t = rec.get("timeUnixNano")
    return t if t not in (None, "", "0", 0) else rec.get("observedTimeUnixNano")


def _message_group(o, res: dict, recs: list) -> dict:
    """Legacy per-message events of one call (same trace/span) -> one event."""
    user = None
    for rec, name, a, body in recs:
        if name == "gen_ai.user.message":
            user = body.get("content") if isinstance(body, dict) else body
    prompt = bodies.prompt_of(user) if user else bodies.Prompt(None, "not_logged")
    rec, _, a, _ = recs[0]
    return _event(o, a=a, res=res, rec=rec, ts=_log_ts(rec), prompt=prompt,
                  signal="log-events")


def _items(doc: dict, o) -> list[tuple[dict, Any]]:
    """(record to dead-letter, mapper) for every span and log record of one batch."""
    items: list = []
    for rs in doc.get("resourceSpans") or []:
        res = attributes((rs.get("resource") or {}).get("attributes"))
        for ss in _scopes(rs, "scopeSpans", "instrumentationLibrarySpans"):
            for span in ss.get("spans") or []:
                items.append((span, lambda res=res, span=span: _span(o, res, span)))
    groups: dict[str, tuple[dict, list]] = {}
    for rl in doc.get("resourceLogs") or []:
        res = attributes((rl.get("resource") or {}).get("attributes"))
        for sl in _scopes(rl, "scopeLogs", "instrumentationLibraryLogs"):
            for rec in sl.get("logRecords") or []:
                a = attributes(rec.get("attributes"))
                name = rec.get("eventName") or a.get("event.name")
                body = any_value(rec.get("body"))
                if name == DETAILS_EVENT or (name is None and _is_call(a)):
                    a = {**body, **a} if isinstance(body, dict) else a
                    items.append((rec, lambda res=res, rec=rec, a=a: _event(
                        o, a=a, res=res, rec=rec, ts=_log_ts(rec), prompt=prompt_from(a),
                        signal="log")))
                elif name in MESSAGE_EVENTS:
                    key = _ids(rec) or digest_id(rec)
                    groups.setdefault(key, (res, []))[1].append((rec, name, a, body))
    for res, recs in groups.values():
        items.append((recs[0][0], lambda res=res, recs=recs: _message_group(o, res, recs)))
    return items


def make(**opts: Any):
    """Adapter factory; options: tenant_field, key_field, default_tenant, key_salt."""
    o = options(FORMAT, opts, tenant=TENANT_FIELDS, key=KEY_FIELDS)

    def adapter(raw: bytes) -> list[dict]:
        try:
            doc = decode_json(raw)
        except Rejected as r:
            if r.reason == "oversized":
                raise
            raise reject(FORMAT, "record is not OTLP JSON (protobuf? set `encoding: otlp_json` "
                                 f"on the collector's kafka exporter): {r}") from None
        if not isinstance(doc, dict) or not ("resourceSpans" in doc or "resourceLogs" in doc):
            raise reject(FORMAT, "neither resourceSpans nor resourceLogs at the top level")
        items = shape_guard(FORMAT, lambda d: _items(d, o))(doc)
        return map_all(FORMAT, items, lambda item: item[1](), lambda item: item[0])
    return adapter
