"""The API-log event's fields and their rules, written once.

Everything else is derived from :data:`FIELDS`: the careful validator of
:mod:`pipeline.contracts.events` reads it field by field, its fast path is generated from
it (one pass of exact type checks, as fast as the hand-written one it replaced), and
``schemas/api_log.schema.json`` is generated from it (``python -m pipeline.contracts.fields``;
a test keeps the committed file equal to :func:`json_schema`). A new field, or a changed
limit, is one line here.

>>> [f.name for f in FIELDS if f.required]
['event_id', 'tenant_id', 'ts']
>>> json_schema()["properties"]["status"]
{'type': ['integer', 'null'], 'minimum': 0, 'maximum': 999}
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_EVENT_BYTES = 1_048_576
MAX_METADATA_BYTES = 16_384
MAX_STRING_CHARS = 1_024
# Event time outside these bounds is a producer bug, not traffic: 2000-01-01 .. 2100-01-01.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000


@dataclass(frozen=True)
class Field:
    """One field of the contract.

    ``kind``: ``string`` (``limit``: most characters; a required one is not empty),
    ``count`` (an integer in ``0 .. limit - 1``), ``number`` (finite, ``0 <= x < limit``),
    ``time`` (RFC 3339 with an offset, or integer epoch ms, in 2000..2100), ``object``
    (``limit``: most bytes serialised), ``vector`` (JSON numbers, the deployment's
    dimension), ``vector_b64`` (base64 of float16/float32, read only without ``embedding``).
    ``attr``: the :class:`~pipeline.contracts.events.Event` attribute it fills.
    """

    name: str
    kind: str
    required: bool = False
    limit: int | float | None = None
    description: str = ""
    attr: str = ""

    @property
    def target(self) -> str:
        return self.attr or self.name


FIELDS = (
    Field("event_id", "string", True, 128, "idempotency key"),
    Field("tenant_id", "string", True, 256, "customer account; any characters"),
    Field("ts", "time", True, None,
          "event time: RFC 3339 with offset, or integer epoch milliseconds (2000..2100)",
          attr="ts_ms"),
    Field("api_key_id", "string", False, 256),
    Field("model", "string", False, MAX_STRING_CHARS),
    Field("endpoint", "string", False, MAX_STRING_CHARS),
    Field("prompt", "string", False, MAX_EVENT_BYTES,
          "user query text; may be absent for privacy"),
    Field("embedding", "vector", False, None,
          "precomputed embedding; dimension fixed per deployment (EMBEDDING_DIM, default 384); "
          "finite float32 values"),
    Field("embedding_b64", "vector_b64", False, None,
          "the embedding as standard base64 of little-endian float16 (EMBEDDING_DIM*2 bytes) "
          "or float32 (EMBEDDING_DIM*4 bytes), e.g. OpenAI's encoding_format=base64; other "
          "lengths are rejected with embedding_dim, NaN/Inf with embedding_value; ignored "
          "when embedding is present", attr="embedding"),
    Field("input_tokens", "count", False, 2**31),
    Field("output_tokens", "count", False, 2**31),
    Field("latency_ms", "number", False, 1e9),
    Field("status", "count", False, 1000),
    Field("client_ip", "string", False, 64),
    Field("user_agent", "string", False, MAX_STRING_CHARS),
    Field("metadata", "object", False, MAX_METADATA_BYTES,
          "free-form, at most 16 KiB serialised"),
    Field("account_created_at", "time", False, None,
          "when the tenant's account was created, where the gateway knows it (RFC 3339 or "
          "integer epoch ms, 2000..2100); the campaign stage uses it to tell new accounts "
          "from old ones", attr="account_created_ms"),
)
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "api_log.schema.json"


def _property(f: Field) -> dict:
    null = [] if f.required else ["null"]
    if f.kind == "time":
        p = {"oneOf": [{"type": "string", "format": "date-time"},
                       {"type": "integer", "minimum": MIN_TS_MS, "maximum": MAX_TS_MS - 1}]
             + [{"type": "null"}] * (not f.required)}
    elif f.kind == "string":
        p = {"type": "string" if f.required else ["string", "null"]}
        if f.required:
            p["minLength"] = 1
        p["maxLength"] = f.limit
    elif f.kind == "count":
        p = {"type": ["integer", *null], "minimum": 0, "maximum": f.limit - 1}
    elif f.kind == "number":
        p = {"type": ["number", *null], "minimum": 0, "exclusiveMaximum": f.limit}
    elif f.kind == "object":
        p = {"type": ["object", *null]}
    elif f.kind == "vector":
        p = {"type": ["array", *null], "items": {"type": "number"}}
    elif f.kind == "vector_b64":
        p = {"type": ["string", *null], "contentEncoding": "base64"}
    else:
        raise ValueError(f"unknown kind {f.kind!r} of field {f.name}")
    return {**p, "description": f.description} if f.description else p


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of an event, as ``schemas/api_log.schema.json``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://coverwatch.dev/schemas/api_log.schema.json",
        "title": "coverwatch API log event",
        "description": "One LLM API request as logged by a gateway. Unknown fields are "
                       "ignored. Generated from pipeline/contracts/fields.py, which the "
                       "validator in pipeline/contracts/events.py is built from.",
        "type": "object",
        "required": [f.name for f in FIELDS if f.required],
        "properties": {f.name: _property(f) for f in FIELDS},
        "additionalProperties": True,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(schema_text())
    print(SCHEMA_PATH, file=sys.stderr)
