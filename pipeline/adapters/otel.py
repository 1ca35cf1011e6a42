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

One call can arrive in two halves, in either order and in different Kafka records: the
span (model, tokens, latency) and the call's ``gen_ai.user.message`` log events (the prompt),
which is how the openai-v2 instrumentation writes content by default. Both carry the same
trace and span id, so both map to one ``event_id`` and de-duplication would keep only the
first. The adapter holds such a half (:class:`Halves`) until its other half arrives, then
emits one merged event, or emits it alone after ``part_wait_s`` (default 10 s, wall clock
or event time). A span that carries its prompt itself is never held, and in a stream a
prompt-less span is held only for tenants that have sent message log events before (most
never do: content capture is off by default), so their spans are not delayed.

>>> span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "chat gpt-4o",
...   "startTimeUnixNano": "1772366400000000000", "endTimeUnixNano": "1772366401500000000",
...   "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
...                  {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}}]}
>>> batch = {"resourceSpans": [{"resource": {"attributes": [
...   {"key": "service.name", "value": {"stringValue": "support-bot"}}]},
...   "scopeSpans": [{"spans": [span]}]}]}
>>> import orjson
>>> [e] = make(part_wait_s=0)(orjson.dumps(batch))   # 0: no wait for the prompt half
>>> e["tenant_id"], e["endpoint"], e["input_tokens"], e["latency_ms"]
('support-bot', 'chat', 42, 1500.0)
"""
from __future__ import annotations

import threading
import time
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


PART_WAIT_S = 10.0
MAX_HELD = 100_000


def _half(ev: Any) -> str | None:
    """``span`` (no prompt of its own) or ``log-events`` for half a call, else None."""
    if type(ev) is not dict:                     # an Unmappable record: passed through
        return None
    meta = ev.get("metadata") or {}
    if meta.get("signal") == "log-events":
        return "log-events"
    if meta.get("signal") == "span" and "prompt" not in ev:
        return "span"
    return None


def merge_halves(a: dict, b: dict) -> dict:
    """One event from a call's span and its message log events: the span's fields, the
    log events' prompt, both metadata (``signal: span+log-events``)."""
    span, logs = (a, b) if a["metadata"]["signal"] == "span" else (b, a)
    ev = {**logs, **span}
    meta = {**logs["metadata"], **span["metadata"], "signal": "span+log-events"}
    if "prompt" in logs:
        ev["prompt"] = logs["prompt"]
        meta.pop("prompt_missing", None)
        if logs["metadata"].get("prompt_truncated"):
            meta["prompt_truncated"] = True
    elif logs["metadata"].get("prompt_missing") not in (None, "not_logged"):
        meta["prompt_missing"] = logs["metadata"]["prompt_missing"]     # e.g. redacted
    meta["prompt_present"] = "prompt" in ev
    meta["prompt_redacted"] = "prompt" not in ev
    ev["metadata"] = meta
    return ev


class Halves:
    """Held halves of calls, keyed by event id, until the other half comes or time is up.

    ``wait_s`` bounds the wait in wall-clock seconds and in event time (a half older than
    the newest half of its tenant minus ``wait_s`` is released: a backlog read in seconds
    must not hold hours of halves; per tenant, because services' clocks differ), ``None``
    holds everything until
    :meth:`flush` (offline replay, where files are read one after the other). At most
    ``max_held`` halves are held; the oldest go first. Events of complete calls that are
    still held when the process stops are lost with it (at most ``wait_s`` of them).
    """

    def __init__(self, wait_s: float | None = PART_WAIT_S, max_held: int = MAX_HELD):
        self.wait_s = wait_s
        self.max_held = max_held
        self.held: dict[str, tuple[dict, str, float]] = {}
        self.done: dict[str, None] = {}          # recent complete spans: their late halves
        self.with_logs: dict[str, None] = {}     # tenants that send message log events
        self.newest: dict[str, int] = {}         # per tenant: the newest half's event time
        self.lock = threading.Lock()            # the worker calls adapters from one thread

    def offer(self, events: list) -> list:
        out, now = [], time.monotonic()
        with self.lock:
            for ev in events:
                half = _half(ev)
                if half == "log-events":
                    self._bounded(self.with_logs, ev["tenant_id"])
                if half is None:
                    if type(ev) is dict and (ev.get("metadata") or {}).get("signal") == "span":
                        self._remember(ev["event_id"])
                    out.append(ev)
                    continue
                eid = ev["event_id"]
                other = self.held.get(eid)
                if other is not None and other[1] != half:
                    del self.held[eid]
                    out.append(merge_halves(other[0], ev))
                    self._remember(eid)
                elif other is not None or (half == "log-events" and eid in self.done):
                    continue                     # a re-sent half, or the late half of a
                elif self.wait_s == 0 or (       # call whose span had the prompt already
                        half == "span" and self.wait_s is not None
                        and ev["tenant_id"] not in self.with_logs):
                    out.append(ev)
                else:
                    self.held[eid] = (ev, half, now)
                    t = ev["tenant_id"]
                    self.newest[t] = max(self.newest.get(t, 0), ev["ts"])
                    if len(self.newest) > self.max_held:
                        del self.newest[next(iter(self.newest))]
            out += self._due(now)
        return out

    def flush(self) -> list[dict]:
        with self.lock:
            out = [ev for ev, _, _ in self.held.values()]
            self.held.clear()
        return out

    def _remember(self, eid: str) -> None:
        self._bounded(self.done, eid)

    def _bounded(self, d: dict, key: str) -> None:
        d[key] = None
        if len(d) > self.max_held:
            del d[next(iter(d))]

    def _due(self, now: float) -> list[dict]:
        """Halves whose wait is over (and the oldest beyond ``max_held``), oldest first."""
        over, wait, due = len(self.held) - self.max_held, self.wait_s, []
        for eid, (ev, _, since) in self.held.items():
            if over > 0:
                over -= 1
            elif wait is None or not (now - since >= wait or ev["ts"] < self.newest.get(
                    ev["tenant_id"], 0) - wait * 1000):
                break
            due.append(eid)
        return [self.held.pop(eid)[0] for eid in due]


class OtelAdapter:
    """The ``otel-genai`` adapter: OTLP JSON batch bytes -> contract events."""

    def __init__(self, o, wait_s: float | None):
        self.o = o
        self.halves = Halves(wait_s)

    def __call__(self, raw: bytes) -> list[dict]:
        try:
            doc = decode_json(raw)
        except Rejected as r:
            if r.reason == "oversized":
                raise
            raise reject(FORMAT, "record is not OTLP JSON (protobuf? set `encoding: otlp_json` "
                                 f"on the collector's kafka exporter): {r}") from None
        if not isinstance(doc, dict) or not ("resourceSpans" in doc or "resourceLogs" in doc):
            raise reject(FORMAT, "neither resourceSpans nor resourceLogs at the top level")
        items = shape_guard(FORMAT, lambda d: _items(d, self.o))(doc)
        return self.halves.offer(map_all(FORMAT, items, lambda item: item[1](),
                                         lambda item: item[0]))

    def offline(self) -> None:
        """Every half is in the files being read: hold them all until :meth:`flush`."""
        self.halves.wait_s = None

    def due(self) -> list[dict]:
        """Halves whose wait is over, without a new record (a stream's idle poll)."""
        return self.halves.offer([])

    def flush(self) -> list[dict]:
        """Halves still waiting for their other half, each as an event of its own."""
        return self.halves.flush()


def make(**opts: Any) -> OtelAdapter:
    """Adapter factory; options: tenant_field, key_field, default_tenant, key_salt, and
    part_wait_s (seconds to hold half a call for its other half; 0: never hold)."""
    o = options(FORMAT, opts, tenant=TENANT_FIELDS, key=KEY_FIELDS, extra=("part_wait_s",))
    wait = opts.get("part_wait_s", PART_WAIT_S)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 3600:
        raise SystemExit(f"{FORMAT}: part_wait_s must be a number of seconds in 0..3600")
    return OtelAdapter(o, float(wait))
