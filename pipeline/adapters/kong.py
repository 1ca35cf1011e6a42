"""``kong``: Kong Gateway log JSON with the AI Proxy ``ai`` object -> contract events.

Every Kong log plugin (kafka-log, http-log, file-log, ...) emits the same serializer JSON;
AI Proxy adds ``ai.proxy.{meta,usage,payload}`` (3.8+), ``ai.<plugin>.{meta,usage}`` with
singular ``prompt_token``/``completion_token`` and ``ai.payload.request`` (3.6/3.7), or
``ai.{meta,usage,payload}`` directly under ``ai`` (3.6 with one AI plugin). A
``request_model`` of ``UNSPECIFIED`` (the caller let the route pick) is not a model name.
``log_statistics`` and ``log_payloads`` default to false, so a record without ``ai`` still
counts (volume, timing, status); http-log batches are arrays. The tenant is the
authenticated consumer (its ``created_at`` becomes ``account_created_at``); the credential
is ``authenticated_entity.id``. Traffic with no consumer (a route without an auth plugin)
goes to ``default_tenant`` when set, else to one tenant per workspace (``workspace_name``,
usually ``default``), marked ``tenant_fallback`` in metadata.

>>> [e] = make()(b'{"started_at": 1772366400000, "request": {"id": "r1", "uri": "/chat?x=1",'
...   b' "headers": {"user-agent": "curl/8"}}, "response": {"status": 200},'
...   b' "latencies": {"request": 812}, "client_ip": "10.0.0.7", "consumer": {"username": "acme"},'
...   b' "ai": {"proxy": {"meta": {"request_model": "gpt-4o"},'
...   b' "usage": {"prompt_tokens": 17, "completion_tokens": 9}}}}')
>>> e["tenant_id"], e["endpoint"], e["input_tokens"], e["metadata"]["prompt_missing"]
('acme', '/chat', 17, 'not_logged')
"""
from __future__ import annotations

from typing import Any

from pipeline.adapters import bodies
from pipeline.adapters.common import (build, count, digest_id, get_path, http_status,
                                      load_records, map_all, obj, options, reject, to_ms)
from pipeline.contracts.events import Rejected

FORMAT = "kong"
TENANT_FIELDS = ("consumer.custom_id", "consumer.username", "consumer.id")
NOT_A_MODEL = {"UNSPECIFIED", ""}
KEY_FIELDS = ("authenticated_entity.id",)


def _plugin(ai: dict) -> dict:
    """The AI Proxy section: ``ai.proxy`` (3.8+), the legacy ``ai.<plugin-name>``, or ``ai``
    itself when ``meta``/``usage`` sit directly under it (3.6)."""
    if isinstance(ai.get("proxy"), dict):
        return ai["proxy"]
    if isinstance(ai.get("meta"), dict) or isinstance(ai.get("usage"), dict):
        return ai
    for v in ai.values():
        if isinstance(v, dict) and ("usage" in v or "meta" in v):
            return v
    return {}


def _header(headers: Any, name: str) -> str | None:
    v = headers.get(name) if isinstance(headers, dict) else None
    v = v[0] if isinstance(v, list) and v else v
    return v if isinstance(v, str) else None


def make(**opts: Any):
    """Adapter factory; options: tenant_field, key_field, default_tenant, key_salt."""
    o = options(FORMAT, opts, tenant=TENANT_FIELDS, key=KEY_FIELDS)

    def one(r: Any) -> dict:
        if not isinstance(r, dict) or "started_at" not in r or not isinstance(
                r.get("request"), dict):
            raise reject(FORMAT, "not a Kong log record (needs started_at and request)")
        req, resp, ai = r["request"], obj(r.get("response")), obj(r.get("ai"))
        plug = _plugin(ai)
        meta, usage = obj(plug.get("meta")), obj(plug.get("usage"))
        payload = obj(plug.get("payload") or ai.get("payload"))
        inp = count(usage.get("prompt_tokens", usage.get("input_tokens", usage.get(
            "prompt_token"))))
        out = count(usage.get("completion_tokens", usage.get("output_tokens", usage.get(
            "completion_token"))))
        if inp is None and out is None and payload.get("response"):
            inp, out = bodies.usage_of(payload["response"])
        ip = r.get("client_ip")
        return build(
            o, event_id=req.get("id") or _header(resp.get("headers"), "x-kong-request-id")
            or _header(req.get("headers"), "x-kong-request-id") or digest_id(r),
            ts=r["started_at"], lookup=lambda path: get_path(r, path),
            fallback_tenant=r.get("workspace_name") or "default",
            account_created_at=_created(get_path(r, "consumer.created_at")),
            prompt=bodies.prompt_of(payload.get("request")),
            model=_model(meta.get("request_model")) or _model(meta.get("response_model"))
            or _model(bodies.model_of(payload.get("request"))),
            endpoint=str(req.get("uri") or "").split("?", 1)[0] or None,
            input_tokens=inp, output_tokens=out,
            latency_ms=_ms(get_path(r, "latencies.request")),
            status=http_status(resp.get("status")),
            client_ip=ip.split(",")[0].strip() if isinstance(ip, str) else None,
            user_agent=_header(req.get("headers"), "user-agent"),
            meta={"provider": meta.get("provider_name"), "response_model":
                  meta.get("response_model"), "request_mode": meta.get("request_mode"),
                  "llm_latency_ms": meta.get("llm_latency"), "cost": usage.get("cost"),
                  "cache_status": get_path(plug, "cache.cache_status"),
                  "service": get_path(r, "service.name"), "route": get_path(r, "route.name"),
                  "workspace": r.get("workspace_name"), "ai_statistics": bool(usage)})

    def adapter(raw: bytes) -> list[dict]:
        return map_all(FORMAT, load_records(raw), one)
    return adapter


def _model(v: Any) -> str | None:
    return v if isinstance(v, str) and v.strip().upper() not in NOT_A_MODEL else None


def _created(v: Any) -> int | None:
    """Kong entity ``created_at`` (epoch seconds) -> epoch ms; None when absent or odd."""
    try:
        return to_ms(v, FORMAT) if v not in (None, "", 0) else None
    except Rejected:
        return None


def _ms(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else None
