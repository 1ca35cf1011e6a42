"""What every gateway adapter shares: options, dotted paths, timestamps, hashing, the event dict.

Gateways disagree on where the tenant and the credential live, so each adapter takes the
same options (``tenant_field``, ``key_field``, ``default_tenant``, ``key_salt``) with its own
documented defaults. Credentials are hashed here and nowhere else, so no adapter can store
one as given.

>>> get_path({"a": {"b.c": {"d": 1}}}, "a.b.c.d")
1
>>> to_ms("1772366400123456789", "otel-genai"), to_ms(1772366400.5, "litellm")
(1772366400123, 1772366400500)
>>> hash_key("sk-live-123")
'2a0da64c63463388'
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from pipeline.contracts.events import Rejected, parse_ts

COMMON_OPTIONS = ("tenant_field", "key_field", "default_tenant", "key_salt")
_LIMITS = {"model": 1024, "endpoint": 1024, "user_agent": 1024, "client_ip": 64}
_EMPTY = (None, "", [], {})
# A date-time with no zone designator at the end (Z, +hh:mm, -hh:mm or +hhmm).
_NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


@dataclass(frozen=True)
class Options:
    """Validated adapter options: where tenant and credential come from."""

    fmt: str
    tenant_fields: tuple[str, ...]
    key_fields: tuple[str, ...]
    default_tenant: str | None = None
    key_salt: bytes = b""


def options(fmt: str, given: dict, *, tenant: tuple[str, ...], key: tuple[str, ...],
            extra: tuple[str, ...] = ()) -> Options:
    """Check ``given`` against the allowed names; a typo must fail at start, not map wrongly.
    ``extra`` names the format's own options (read by the format, not here)."""
    allowed = COMMON_OPTIONS + extra
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise SystemExit(f"{fmt}: unknown adapter option(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(allowed)}")

    def paths(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = given.get(name)
        if v is None:
            return default
        if isinstance(v, str):
            v = v.split(",")
        if not isinstance(v, list) or not all(isinstance(p, str) and p.strip() for p in v):
            raise SystemExit(f"{fmt}: {name} must be a dotted path, a comma-separated list "
                             "of paths or a JSON array of paths")
        return tuple(p.strip() for p in v)

    for name in ("default_tenant", "key_salt"):
        if given.get(name) is not None and not isinstance(given[name], str):
            raise SystemExit(f"{fmt}: {name} must be a string")
    salt = (given.get("key_salt") or "").encode()
    if len(salt) > 64:
        raise SystemExit(f"{fmt}: key_salt must be at most 64 bytes")
    return Options(fmt, paths("tenant_field", tenant), paths("key_field", key),
                   given.get("default_tenant") or None, salt)


def reject(fmt: str, why: str) -> Rejected:
    return Rejected("adapter", f"{fmt}: {why}"[:300])


def get_path(obj: Any, path: str) -> Any:
    """``a.b.c`` into nested objects; keys that themselves contain dots are matched whole."""
    parts = path.split(".")

    def walk(o: Any, i: int) -> Any:
        if i == len(parts):
            return o
        if isinstance(o, list):
            return walk(o[int(parts[i])], i + 1) if parts[i].isdigit() and int(
                parts[i]) < len(o) else None
        if not isinstance(o, dict):
            return None
        for j in range(len(parts), i, -1):  # longest key first: "x-kong-request-id", "b.c"
            key = ".".join(parts[i:j])
            if key in o:
                found = walk(o[key], j)
                if found is not None:
                    return found
        return None
    return walk(obj, 0)


def first(lookup: Callable[[str], Any], paths) -> tuple[str | None, Any]:
    """The first path with a non-empty value, and that value."""
    for p in paths:
        v = lookup(p)
        if v not in _EMPTY:
            return p, v
    return None, None


def obj(v: Any) -> dict:
    """``v`` if it is an object, else an empty one: an optional section of the wrong type
    must not cost the event."""
    return v if isinstance(v, dict) else {}


def hash_key(value: Any, salt: bytes = b"") -> str:
    """Credential -> 16 hex digits (blake2b): stable per key, never the key itself."""
    return hashlib.blake2b(str(value).encode(), digest_size=8, key=salt).hexdigest()


def digest_id(record: Any) -> str:
    """A deterministic event id for a source record that has none."""
    return hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS),
                           digest_size=16).hexdigest()


def to_ms(value: Any, fmt: str, *, naive_utc: bool = False) -> int:
    """Epoch s/ms/µs/ns (number or digit string) or RFC 3339 -> epoch ms, told apart by size.

    ``naive_utc``: a date-time without offset (``2025-01-24 09:20:46.847371``, as LiteLLM's
    v1 payload and SIEM exports write them) is UTC; otherwise it is rejected as ambiguous.
    """
    if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
        value = float(value) if "." in value else int(value)
    if isinstance(value, bool) or value is None:
        raise reject(fmt, f"timestamp missing or not a time: {value!r}")
    if isinstance(value, (int, float)):
        x = abs(value)
        per_ms = 1e-3 if x < 1e11 else 1 if x < 1e14 else 1_000 if x < 1e17 else 1_000_000
        if isinstance(value, int) and per_ms >= 1:
            return value // per_ms
        return round(value / per_ms)
    if isinstance(value, str):
        text = value.strip()
        text = text if "T" in text else text.replace(" ", "T", 1)
        if naive_utc and _NAIVE.match(text):
            text += "+00:00"
        try:
            return parse_ts(text)
        except Rejected as r:
            raise reject(fmt, f"timestamp {value[:40]!r}: {r.detail}") from None
    raise reject(fmt, f"timestamp is {type(value).__name__}")


def count(value: Any) -> int | None:
    """A token count as int, or None when absent or not a count."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        n = int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None
    return n if 0 <= n < 2**31 else None


def http_status(value: Any) -> int | None:
    n = count(value)
    return n if n is not None and 100 <= n < 600 else None


class Unmappable(dict):
    """One unmappable record in a batch: dead-lettered alone, with the adapter's reason.

    ``accept()`` validates each record an adapter returns; validation reads fields with
    ``.get``, which raises the stored rejection here, and the record's own content (this dict)
    is what goes to the DLQ. So one bad span does not cost the other spans of its batch.
    """

    def __init__(self, record: Any, rejected: Rejected):
        super().__init__(record if isinstance(record, dict) else {"record": record})
        self.rejected = rejected

    def get(self, *args):
        raise self.rejected


# A field of an unexpected JSON type surfaces as one of these while mapping.
_SHAPE_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError, OverflowError)


def shape_guard(fmt: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn`` with shape errors turned into ``adapter`` rejections (not ``internal_error``)."""
    def guarded(x: Any) -> Any:
        try:
            return fn(x)
        except Rejected:
            raise
        except _SHAPE_ERRORS as exc:
            raise reject(fmt, f"unexpected record shape ({type(exc).__name__}: {exc})") from None
    return guarded


def map_all(fmt: str, items: list, fn: Callable[[Any], dict | None],
            record: Callable[[Any], Any] = lambda item: item) -> list[dict]:
    """Map each item; skip Nones; a lone bad record rejects the message, else only itself
    (``record(item)`` is what gets dead-lettered)."""
    out, fn = [], shape_guard(fmt, fn)
    for item in items:
        try:
            ev = fn(item)
        except Rejected as r:
            if len(items) == 1:
                raise
            out.append(Unmappable(record(item), r))
            continue
        if ev is not None:
            out.append(ev)
    return out


def load_records(raw: bytes, max_bytes: int | None = None) -> list:
    """One JSON value, a JSON array, or NDJSON lines in one message -> a list of records."""
    from pipeline.contracts.events import MAX_EVENT_BYTES, decode_json
    try:
        doc = decode_json(raw, max_bytes=max_bytes or MAX_EVENT_BYTES)
    except Rejected as r:
        lines = [ln for ln in bytes(raw).splitlines() if ln.strip()]
        if r.reason != "invalid_json" or len(lines) < 2:
            raise
        try:
            return [orjson.loads(ln) for ln in lines]
        except orjson.JSONDecodeError:
            raise r from None
    return doc if isinstance(doc, list) else [doc]


def build(opts: Options, *, event_id: Any, ts: Any, lookup: Callable[[str], Any],
          prompt, meta: dict, naive_utc: bool = False, fallback_tenant: Any = None,
          **fields) -> dict:
    """The contract dict: tenant and key resolved and hashed, prompt state in metadata.

    ``prompt`` is a :class:`pipeline.adapters.bodies.Prompt`; ``fields`` are the optional
    contract fields (Nones dropped, over-long strings clipped rather than rejected).
    """
    fmt = opts.fmt
    _, tenant = first(lookup, opts.tenant_fields)
    if tenant is None:
        tenant = opts.default_tenant
    if tenant is None and fallback_tenant is not None:
        tenant = fallback_tenant
        meta = {**meta, "tenant_fallback": True}
    if tenant is None:
        raise reject(fmt, f"no tenant field (tried {', '.join(opts.tenant_fields)}); "
                          "set tenant_field or default_tenant in COVERWATCH_ADAPTER_OPTIONS")
    if isinstance(tenant, (dict, list)):
        raise reject(fmt, "tenant field is not a scalar")
    _, key = first(lookup, opts.key_fields)
    if event_id in _EMPTY:
        raise reject(fmt, "no event id")
    ev: dict[str, Any] = {"event_id": str(event_id)[:128], "ts": to_ms(ts, fmt,
                                                                       naive_utc=naive_utc),
                          "tenant_id": str(tenant)}
    if key is not None:
        ev["api_key_id"] = hash_key(key, opts.key_salt)
    for name, v in fields.items():
        if v is None:
            continue
        if isinstance(v, str) and name in _LIMITS:
            v = v[:_LIMITS[name]]
        ev[name] = v
    if prompt.text:
        ev["prompt"] = prompt.text
    meta = {k: v for k, v in meta.items() if v not in _EMPTY}
    meta.update(source_format=fmt, prompt_present=bool(prompt.text),
                prompt_redacted=not prompt.text)
    if not prompt.text:
        meta["prompt_missing"] = prompt.missing or "not_logged"
    if prompt.truncated:
        meta["prompt_truncated"] = True
    ev["metadata"] = meta
    return ev
