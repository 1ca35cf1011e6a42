"""The API-log event contract: parse raw bytes, validate, normalise.

Everything that reaches the detector went through :func:`parse_event`. A message that is
not a valid event raises :class:`Rejected` with a machine-readable ``reason`` code, which
the shell sends to the dead-letter topic together with the original bytes. The rules are
written once, in :mod:`pipeline.contracts.fields`: the careful path here reads them field
by field, the fast path is generated from them, and so is ``schemas/api_log.schema.json``.

>>> e = parse_event(b'{"event_id": "e1", "ts": "2026-01-01T10:00:00+02:00", "tenant_id": "t"}')
>>> e.ts_ms, e.ts_iso()
(1767254400000, '2026-01-01T08:00:00.000Z')
>>> parse_event(b'{"event_id": "e1"}')
Traceback (most recent call last):
...
pipeline.contracts.events.Rejected: missing_field: tenant_id
"""
from __future__ import annotations

import binascii
import json
import math
import re
from array import array
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson

from pipeline.contracts.fields import (  # noqa: F401  (re-exported: the contract's limits)
    FIELDS,
    MAX_EVENT_BYTES,
    MAX_METADATA_BYTES,
    MAX_STRING_CHARS,
    MAX_TS_MS,
    MIN_TS_MS,
    Field,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)   # built once: per call it was 60% of parse_ts

_NUMBER_TYPES = {float, int}
_FLOAT_ONLY = {float}
# The smallest double that rounds to infinity as float32 (2**128 - 2**103, half an ulp past
# float32's largest finite value).
_F32_OVERFLOW = 2.0**128 - 2.0**103

REASONS = (
    "oversized", "not_utf8", "invalid_json", "not_object", "missing_field", "wrong_type",
    "out_of_range", "bad_timestamp", "embedding_dim", "embedding_value", "metadata_too_large",
    "metadata_too_deep", "duplicate_key", "adapter", "internal_error",
)


class Rejected(ValueError):
    """A message that is not a valid event; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Event:
    """A validated API-log event, timestamps normalised to UTC epoch milliseconds."""

    event_id: str
    ts_ms: int
    tenant_id: str
    api_key_id: str | None = None
    model: str | None = None
    endpoint: str | None = None
    prompt: str | None = None
    embedding: np.ndarray | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    status: int | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    metadata: dict | None = None
    # when the tenant's account was created (``account_created_at``), where the gateway knows
    # it: the campaign stage tells a new account from an old one by it (see DESIGN.md)
    account_created_ms: int | None = None
    extra: dict = field(default_factory=dict)  # shell-owned: source topic/partition/offset

    def ts_iso(self) -> str:
        return ms_to_iso(self.ts_ms)

    def to_dict(self) -> dict[str, Any]:
        """The normalised event as contract JSON (``ts`` as RFC 3339 UTC)."""
        d: dict[str, Any] = {"event_id": self.event_id, "ts": self.ts_iso(),
                             "tenant_id": self.tenant_id}
        for name in _OPTIONAL:
            v = getattr(self, name)
            if v is not None:
                d[name] = v.tolist() if name == "embedding" else v
        if self.account_created_ms is not None:
            d["account_created_at"] = ms_to_iso(self.account_created_ms)
        return d


# what to_dict writes as it is (times are written as RFC 3339; the vector as JSON floats)
_OPTIONAL = tuple(f.name for f in FIELDS
                  if not f.required and f.kind not in ("time", "vector_b64"))


def ms_to_iso(ts_ms: int) -> str:
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def parse_ts(value: Any) -> int:
    """RFC 3339 string or integer epoch milliseconds -> UTC epoch milliseconds."""
    if isinstance(value, bool):
        raise Rejected("wrong_type", "ts must be an RFC 3339 string or integer epoch ms")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        s = value.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise Rejected("bad_timestamp", f"not RFC 3339: {value[:64]!r}") from None
        if dt.tzinfo is None:
            raise Rejected("bad_timestamp", "RFC 3339 timestamp needs an offset or Z")
        ms = (dt - _EPOCH) // _MS
    else:
        raise Rejected("wrong_type", "ts must be an RFC 3339 string or integer epoch ms")
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise Rejected("out_of_range", f"ts {ms} outside 2000..2100")
    return ms


def _string(obj: dict, name: str, *, required: bool = False, max_len: int = MAX_STRING_CHARS):
    v = obj.get(name)
    if v is None:
        if required:
            raise Rejected("missing_field", name)
        return None
    if not isinstance(v, str):
        raise Rejected("wrong_type", f"{name} must be a string")
    if (required and not v) or len(v) > max_len:
        raise Rejected("out_of_range", f"{name} length {len(v)} not in 1..{max_len}")
    return v


def _count(obj: dict, name: str, limit: int) -> int | None:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise Rejected("wrong_type", f"{name} must be an integer")
    if not 0 <= v < limit:
        raise Rejected("out_of_range", f"{name} must be in 0..{limit - 1}")
    return v


def _number(obj: dict, name: str, limit: float) -> float | None:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Rejected("wrong_type", f"{name} must be a number")
    if not (math.isfinite(v) and 0 <= v < limit):
        raise Rejected("out_of_range", f"{name} must be finite, >= 0 and < {limit:g}")
    return float(v)


def _time(obj: dict, name: str, required: bool) -> int | None:
    v = obj.get(name)
    if v is None:
        if required:
            raise Rejected("missing_field", name)
        return None
    if required:
        return parse_ts(v)
    try:
        return parse_ts(v)
    except Rejected as exc:
        raise Rejected(exc.reason, f"{name}: {exc.detail}") from None


def _object(obj: dict, name: str, limit: int) -> dict | None:
    v = obj.get(name)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise Rejected("wrong_type", f"{name} must be an object")
    try:
        size = len(orjson.dumps(v))
    except orjson.JSONEncodeError:   # orjson writes at most 254 levels
        raise Rejected("metadata_too_deep", f"{name} nested deeper than 254 levels") from None
    if size > limit:
        raise Rejected("metadata_too_large", f"{name} over {limit} bytes")
    return v


def _embedding(v: Any, dim: int | None) -> np.ndarray:
    if not isinstance(v, list):
        raise Rejected("wrong_type", "embedding must be an array of numbers")
    if not v or (dim and len(v) != dim):
        raise Rejected("embedding_dim", f"embedding has {len(v)} values, deployment uses {dim}")
    if set(map(type, v)) == _FLOAT_ONLY:
        # The common case, 3x cheaper and with the same outcome as the general path below:
        # doubles -> float64 in one C loop, then the float32 range is checked before the cast.
        a64 = np.frombuffer(array("d", v), dtype=np.float64)
        if not np.abs(a64).max() < _F32_OVERFLOW:   # also false for NaN
            raise Rejected("embedding_value", "embedding contains NaN/Inf or values beyond float32")
        return a64.astype(np.float32)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.asarray(v, dtype=np.float32)
    except (TypeError, ValueError):
        raise Rejected("embedding_value", "embedding must contain only numbers") from None
    if arr.ndim != 1 or not set(map(type, v)) <= _NUMBER_TYPES:
        raise Rejected("embedding_value", "embedding must be a flat array of numbers")
    if not np.isfinite(arr).all():
        raise Rejected("embedding_value", "embedding contains NaN/Inf or values beyond float32")
    return arr


def _embedding_b64(v: Any, dim: int | None) -> np.ndarray:
    """``embedding_b64``: base64 of little-endian float16 or float32, told apart by length.

    JSON floats cost ~30 µs per 384-d event to parse and check; this is a C decode and one
    ``frombuffer``. The length must be ``dim * 2`` (float16) or ``dim * 4`` (float32) bytes
    for the deployment's dimension; a deployment without one cannot tell the two apart.
    """
    if type(v) is not str:
        raise Rejected("wrong_type", "embedding_b64 must be a base64 string")
    try:
        raw = binascii.a2b_base64(v, strict_mode=True)
    except (binascii.Error, ValueError):
        raise Rejected("embedding_value", "embedding_b64 is not valid base64") from None
    if dim and len(raw) == 4 * dim:
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif dim and len(raw) == 2 * dim:
        arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    else:
        raise Rejected("embedding_dim", f"embedding_b64 has {len(raw)} bytes, deployment uses "
                       f"{dim} values ({2 * (dim or 0)} or {4 * (dim or 0)} bytes)")
    if not np.isfinite(arr).all():
        raise Rejected("embedding_value", "embedding_b64 contains NaN/Inf")
    return arr


def _vector(obj: dict, dim: int | None) -> np.ndarray | None:
    """The event's vector: ``embedding`` (JSON floats) when present, else ``embedding_b64``."""
    emb = obj.get("embedding")
    if emb is not None:
        return _embedding(emb, dim)
    b64 = obj.get("embedding_b64")
    return None if b64 is None else _embedding_b64(b64, dim)


def validate(obj: Any, *, embedding_dim: int | None = 384) -> Event:
    """Validate a decoded JSON value against the contract; unknown fields are ignored."""
    if type(obj) is dict:
        event = _well_typed(obj, embedding_dim)
        if event is not None:
            return event
    return _validate_carefully(obj, embedding_dim)


def _validate_carefully(obj: Any, embedding_dim: int | None) -> Event:
    """Every rule of :data:`~pipeline.contracts.fields.FIELDS` in contract order, each
    failure with its own reason and detail."""
    if not isinstance(obj, dict):
        raise Rejected("not_object", f"top-level JSON is {type(obj).__name__}, not an object")
    values: dict[str, Any] = {}
    for f in FIELDS:
        kind = f.kind
        if kind == "string":
            v = _string(obj, f.name, required=f.required, max_len=f.limit)
        elif kind == "time":
            v = _time(obj, f.name, f.required)
        elif kind == "count":
            v = _count(obj, f.name, f.limit)
        elif kind == "number":
            v = _number(obj, f.name, f.limit)
        elif kind == "object":
            v = _object(obj, f.name, f.limit)
        elif kind == "vector":
            v = None if (x := obj.get(f.name)) is None else _embedding(x, embedding_dim)
        else:                              # vector_b64: read only without a JSON vector
            if values.get(f.target) is not None or (x := obj.get(f.name)) is None:
                continue
            v = _embedding_b64(x, embedding_dim)
        values[f.target] = v
    return Event(**values)


def _fast_source() -> str:
    """Source of :func:`_well_typed`, generated from :data:`FIELDS`: exact type checks
    inline, no call per field (the careful path costs about twice as much)."""
    lines = ["def _well_typed(obj, embedding_dim):", "    get = obj.get"]
    add = lines.append
    vectors = []
    for i, f in enumerate(FIELDS):
        v = f"v{i}"
        if f.kind in ("vector", "vector_b64"):
            vectors.append((v, f))
            continue
        add(f"    {v} = get({f.name!r})")
        if f.kind == "string":
            low = "0 < " if f.required else ""
            test = f"type({v}) is str and {low}len({v}) <= {f.limit}"
            add(f"    if not ({test if f.required else f'{v} is None or ' + test}):")
            add("        return None")
        elif f.kind == "count":
            add(f"    if not ({v} is None or type({v}) is int and 0 <= {v} < {f.limit}):")
            add("        return None")
        elif f.kind == "number":
            add(f"    if {v} is not None:")
            add(f"        if type({v}) is int and 0 <= {v} < {f.limit!r}:")
            add(f"            {v} = float({v})")
            add(f"        elif not (type({v}) is float and 0.0 <= {v} < {f.limit!r}):")
            add("            return None")
        elif f.kind == "time":
            add(f"    if type({v}) is int:")
            add(f"        if not {MIN_TS_MS} <= {v} < {MAX_TS_MS}:")
            add("            return None")
            add(f"    elif type({v}) is str:")
            add("        try:")
            add(f"            {v} = parse_ts({v})")
            add("        except Rejected:")
            add("            return None")
            add("    else:" if f.required else f"    elif {v} is not None:")
            add("        return None")
        elif f.kind == "object":
            add(f"    if {v} is not None:")
            add(f"        if type({v}) is not dict:")
            add("            return None")
            add("        try:")
            add(f"            if len(orjson.dumps({v})) > {f.limit}:")
            add("                return None")
            add("        except TypeError:")
            add("            return None")
        else:
            raise ValueError(f"unknown kind {f.kind!r} of field {f.name}")
    # the vector last: everything else is valid by then, so its Rejected is the careful path's
    first = True
    for v, f in vectors:
        check = "_embedding" if f.kind == "vector" else "_embedding_b64"
        if first:
            add(f"    {f.target} = get({f.name!r})")
            add(f"    if {f.target} is not None:")
            add(f"        {f.target} = {check}({f.target}, embedding_dim)")
            first = False
        else:
            add(f"    elif ({v} := get({f.name!r})) is not None:")
            add(f"        {f.target} = {check}({v}, embedding_dim)")
    args = {f.target: (f.target if f.kind in ("vector", "vector_b64") else f"v{i}")
            for i, f in enumerate(FIELDS)}
    order = [x.name for x in dataclasses.fields(Event) if x.name in args]
    if set(order) != set(args):
        raise ValueError(f"fields without an Event attribute: {set(args) - set(order)}")
    add("    return Event(" + ", ".join(args[k] for k in order) + ")")   # positional: faster
    return "\n".join(lines) + "\n"


_FAST_SOURCE = _fast_source()
_generated: dict = {}
exec(compile(_FAST_SOURCE, "<generated from pipeline.contracts.fields>", "exec"), globals(),
     _generated)
_well_typed = _generated["_well_typed"]
_well_typed.__doc__ = """The common, valid record -> :class:`Event`; ``None`` on any doubt.

Generated from :data:`~pipeline.contracts.fields.FIELDS` (``_FAST_SOURCE``). It accepts a
subset of what :func:`_validate_carefully` accepts (exact ``str``/``int``/``float``/``dict``
types) and builds the same Event; anything else returns ``None`` and the careful path
decides, so rejection reasons are its alone."""


_SPACED_KEY = re.compile(rb'"\s+:')   # a key written with white space before its colon


def _count_keys(obj: Any) -> tuple[int, int]:
    """(keys, string values) in all objects and arrays of a decoded message. An array is
    entered when its first item is a string or a container (an embedding is not walked;
    a mixed array only makes the count short, which sends the message to the slow check).
    Iterative: a message may nest 1,000 levels deep."""
    keys = strings = 0
    todo = [obj]
    while todo:
        o = todo.pop()
        if type(o) is dict:
            keys += len(o)
            items = o.values()
        elif o and type(o[0]) in (str, dict, list):
            items = o
        else:
            continue
        for v in items:
            t = type(v)
            if t is str:
                strings += 1
            elif t is dict or t is list:
                todo.append(v)
    return keys, strings


def _unique_pairs(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise Rejected("duplicate_key", f"key {k[:64]!r} appears twice in one object")
            seen.add(k)
    return d


def check_unique_keys(raw: bytes, obj: Any) -> None:
    """:class:`Rejected` ``duplicate_key`` when an object of ``raw`` repeats a key.

    orjson keeps the last value of a repeated key, where other consumers of the same topic
    may keep the first: a way to show coverwatch one tenant and them another. The fast test
    compares, in C, the bytes with what orjson kept: without a backslash in the message every
    quote opens or closes a key or a string, so there are exactly two per key and string kept,
    and a repeated key leaves more. With escapes, the ``":`` that end keys are counted
    instead (inside a string a quote is escaped, so ``\\":`` is not a key's end). Only a
    message that fails the test, or writes white space before a colon, is parsed again with
    duplicate detection. Measured in the README (Topics, the duplicate-key check).
    """
    keys, strings = _count_keys(obj)
    if b"\\" not in raw:
        suspect = raw.count(b'"') != 2 * (keys + strings)
    else:
        suspect = (raw.count(b'":') - raw.count(b'\\":') != keys
                   or _SPACED_KEY.search(raw) is not None)
    if suspect:
        try:
            json.loads(raw, object_pairs_hook=_unique_pairs)
        except RecursionError:
            raise Rejected("invalid_json", "nested too deep to check for repeated keys") from None


def decode_json(raw: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Any:
    """Bytes of one message -> decoded JSON, or :class:`Rejected` (size, UTF-8, syntax,
    a key repeated in one object)."""
    if len(raw) > max_bytes:
        raise Rejected("oversized", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected("not_utf8", "message is not valid UTF-8") from None
        raise Rejected("invalid_json", str(exc)[:200]) from None
    if type(obj) in (dict, list):
        check_unique_keys(raw, obj)
    return obj


def parse_event(raw: bytes, *, embedding_dim: int | None = 384,
                max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Bytes of one message (or JSONL line) -> :class:`Event`, or raise :class:`Rejected`."""
    return validate(decode_json(raw, max_bytes=max_bytes), embedding_dim=embedding_dim)
