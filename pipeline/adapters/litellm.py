"""``litellm``: LiteLLM proxy StandardLoggingPayload -> contract events.

Every LiteLLM callback receives the StandardLoggingPayload; the generic_api logger ships it
as one object, a JSON array (its default batch) or NDJSON, so one message may hold many.
LiteLLM has real tenant fields (team / org on the virtual key), so the defaults use them;
``user_api_key_hash`` is already a SHA-256 of the key and is hashed again like any credential.
``startTime``/``endTime`` are float epoch seconds; ``response_time`` is time to first token
when streaming, so latency is end minus start.

The legacy payload (``generic_api_use_v1``, and LiteLLM's own test fixtures) turns every
value into a string: times as ``str(datetime)`` without a zone (``2025-01-24
09:20:46.847371``; LiteLLM logs UTC, so they are read as UTC), ``metadata`` and ``messages``
as Python ``repr`` strings, ``usage`` as ``Usage(prompt_tokens=.., ...)``. Those are read
back here (``ast.literal_eval``, never ``eval``).

>>> adapter = make()
>>> [e] = adapter(b'{"id": "chatcmpl-1", "startTime": 1772366400.25, "endTime": 1772366401.0,'
...   b' "model": "gpt-4o", "call_type": "acompletion", "status": "success",'
...   b' "prompt_tokens": 9, "completion_tokens": 4,'
...   b' "messages": [{"role": "user", "content": "hi there"}],'
...   b' "metadata": {"user_api_key_team_id": "team-a", "user_api_key_hash": "88dc28"}}')
>>> e["tenant_id"], e["ts"], e["latency_ms"], e["prompt"], e["status"]
('team-a', 1772366400250, 750.0, 'hi there', 200)
"""
from __future__ import annotations

import ast
import re
from typing import Any

import orjson

from pipeline.adapters import bodies
from pipeline.adapters.common import (build, count, digest_id, get_path, http_status, load_records,
                                      map_all, obj, options, reject, to_ms)

FORMAT = "litellm"
TENANT_FIELDS = ("metadata.user_api_key_team_id", "metadata.user_api_key_org_id",
                 "metadata.user_api_key_user_id")
KEY_FIELDS = ("metadata.user_api_key_hash",)
_REPR_FIELDS = ("metadata", "usage", "response", "error_information", "hidden_params")
_REPR_PAIR = re.compile(r"""['"](\w+)['"]\s*:\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|"""
                        r"""-?\d+(?:\.\d+)?(?:e-?\d+)?|None|True|False)(?=\s*[,}])""")
_USAGE_REPR = re.compile(r"\b(prompt_tokens|completion_tokens|total_tokens)=(\d+)")


def _literal(v: Any) -> Any:
    """A dict logged as its Python repr (or JSON) -> the dict; anything else unchanged."""
    if not isinstance(v, str) or len(v) > 1_048_576:
        return v
    t = v.strip()
    if t[:1] == "{":
        try:
            return orjson.loads(t)
        except orjson.JSONDecodeError:
            pass
        try:
            return ast.literal_eval(t)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
        # a repr holding objects (datetime(...), UserAPIKeyAuth(...)): keep the plain pairs
        out = {}
        for k, lit in _REPR_PAIR.findall(t):
            try:
                out.setdefault(k, ast.literal_eval(lit))
            except (ValueError, SyntaxError):
                continue
        return out
    if t.startswith("Usage("):                       # str() of litellm's Usage object
        return {k: int(n) for k, n in _USAGE_REPR.findall(t)}
    return v


def _payload(p: dict) -> dict:
    """A v1 (all-strings) payload with its object-valued fields read back."""
    if not any(isinstance(p.get(k), str) for k in _REPR_FIELDS):
        return p
    return {**p, **{k: _literal(p[k]) for k in _REPR_FIELDS if isinstance(p.get(k), str)}}


def make(**opts: Any):
    """Adapter factory; options: tenant_field, key_field, default_tenant, key_salt."""
    o = options(FORMAT, opts, tenant=TENANT_FIELDS, key=KEY_FIELDS)

    def one(p: Any) -> dict:
        if not isinstance(p, dict):
            raise reject(FORMAT, f"record is {type(p).__name__}, not a StandardLoggingPayload")
        if p.get("startTime") is None or not ("model" in p or "call_type" in p):
            raise reject(FORMAT, "not a StandardLoggingPayload (needs startTime and model)")
        p = _payload(p)
        meta, err = obj(p.get("metadata")), obj(p.get("error_information"))
        start = to_ms(p["startTime"], FORMAT, naive_utc=True)
        end = (to_ms(p["endTime"], FORMAT, naive_utc=True) if p.get("endTime") not in (None, "")
               else None)
        inp, out = count(p.get("prompt_tokens")), count(p.get("completion_tokens"))
        if inp is None and out is None:
            inp, out = bodies.usage_of({"usage": p["usage"]} if isinstance(
                p.get("usage"), dict) else p.get("response"))
        ok = p.get("status", "success") == "success"
        return build(
            o, event_id=p.get("id") or digest_id(p), ts=start, naive_utc=True,
            lookup=lambda path: get_path(p, path), prompt=bodies.prompt_of(p.get("messages")),
            model=p.get("model") or None,
            endpoint=meta.get("user_api_key_request_route") or p.get("call_type"),
            input_tokens=inp, output_tokens=out,
            latency_ms=float(end - start) if end is not None and end >= start else None,
            status=200 if ok else (http_status(err.get("error_code")) or 500),
            client_ip=p.get("requester_ip_address") or meta.get("requester_ip_address"),
            user_agent=_str(p.get("user_agent")) or _str(meta.get("user_agent")),
            meta={"trace_id": p.get("trace_id"), "call_type": p.get("call_type"),
                  "provider": p.get("custom_llm_provider"), "model_group": p.get("model_group"),
                  "end_user": p.get("end_user"), "user_id": meta.get("user_api_key_user_id"),
                  "key_alias": meta.get("user_api_key_alias"), "stream": p.get("stream"),
                  "cache_hit": p.get("cache_hit"), "cost": p.get("response_cost"),
                  "error_class": err.get("error_class"),
                  "request_tags": p["request_tags"][:10] if isinstance(
                      p.get("request_tags"), list) else None})

    def adapter(raw: bytes) -> list[dict]:
        return map_all(FORMAT, load_records(raw), one)
    return adapter


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None
