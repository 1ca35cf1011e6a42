"""Hostile JSON gets a clear reason: metadata nested 1,000 deep, keys repeated in one object."""
from __future__ import annotations

import json

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from pipeline.adapters import get_adapter
from pipeline.contracts.events import REASONS, Rejected, parse_event
from pipeline.stream.repartition import validate_batch

HEAD = b'{"event_id":"e1","ts":1767225600000,"tenant_id":"t"'


def reason(raw: bytes) -> str | None:
    try:
        parse_event(raw)
    except Rejected as r:
        return r.reason
    return None


def test_metadata_nested_1000_deep_is_dead_lettered_as_too_deep():
    raw = HEAD + b',"metadata":' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}"
    rec = ConsumerRecord("api-logs", 0, 7, 0, 0, None, raw, None, 0, len(raw), [])
    out, dead = validate_batch([rec], get_adapter("coverwatch"), 384, 4)
    assert not out
    assert orjson.loads(dead[0][1])["reason"] == "metadata_too_deep"
    assert "metadata_too_deep" in REASONS and "duplicate_key" in REASONS


@pytest.mark.parametrize("raw", [
    HEAD + b',"tenant_id":"other"}',                        # last one wins in orjson
    HEAD + b',"tenant\\u005fid":"other"}',                  # the same key, escaped
    HEAD + b', "tenant_id" : "other","prompt":"a\\nb"}',    # white space, escapes elsewhere
    HEAD + b',"metadata":{"k":1,"k":2}}',                   # nested
    HEAD + b',"metadata":{"l":[{"k":1,"k":2}]}}',            # inside an array
    HEAD + b',"s":"x\\\\","u":"y\\\\","tenant_id":"other"}',   # escaped backslashes
])
def test_a_key_repeated_in_one_object_is_rejected(raw):
    assert reason(raw) == "duplicate_key"


@pytest.mark.parametrize("raw", [
    HEAD + b',"model":"prompt","prompt":"model"}',          # values equal to key names
    HEAD + b',"prompt":"say \\"hi\\": now\\n","metadata":{"a":{"b":[{"c":"d"}]}}}',
    json.dumps({"event_id": "e", "ts": 1767225600000, "tenant_id": "t",
                "prompt": "é \\ \" x"}, indent=2).encode(),
])
def test_ordinary_json_is_not_taken_for_repeated_keys(raw):
    assert reason(raw) is None
