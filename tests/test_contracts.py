"""The event and alert contracts: a validation table of good and bad messages."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from pipeline.contracts.alerts import Alert
from pipeline.contracts.events import (MAX_EVENT_BYTES, Event, Rejected, _validate_carefully,
                                       _well_typed, parse_event)

BASE = {"event_id": "e-1", "ts": "2026-03-01T12:00:00Z", "tenant_id": "acme"}
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def b64(values, dtype="<f4") -> str:
    return base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode()


def msg(**fields) -> bytes:
    d = {**BASE, **fields}
    return orjson.dumps({k: v for k, v in d.items() if v is not ...})


GOOD = {
    "rfc3339_z": msg(),
    "rfc3339_offset": msg(ts="2026-03-01T14:00:00.250+02:00"),
    "epoch_ms": msg(ts=1772366400000),
    "extra_fields": msg(something_new={"a": 1}, another=[1, 2]),
    "unicode": msg(tenant_id="テナント-ü-'\"; DROP TABLE x", prompt="请解释量子纠缠 🚀"),
    "long_prompt": msg(prompt="x" * 500_000),
    "all_optional": msg(api_key_id="k1", model="m", endpoint="/v1/chat", prompt="hi",
                        embedding=[0.1] * 384, input_tokens=3, output_tokens=9,
                        latency_ms=12.5, status=200, client_ip="10.0.0.1",
                        user_agent="sdk/1.0", metadata={"app": "x"}),
    "nulls_for_optional": msg(model=None, prompt=None, embedding=None),
    "embedding_b64_float32": msg(embedding_b64=b64([0.1] * 384)),
    "embedding_b64_float16": msg(embedding_b64=b64([0.1] * 384, "<f2")),
    "embedding_b64_null": msg(embedding_b64=None),
}

BAD = {
    "not_json": (b"{not json", "invalid_json"),
    "not_object": (b"[1, 2, 3]", "not_object"),
    "scalar": (b"42", "not_object"),
    "missing_event_id": (msg(event_id=...), "missing_field"),
    "missing_tenant": (msg(tenant_id=...), "missing_field"),
    "missing_ts": (msg(ts=...), "missing_field"),
    "tenant_not_string": (msg(tenant_id=12), "wrong_type"),
    "empty_tenant": (msg(tenant_id=""), "out_of_range"),
    "tenant_too_long": (msg(tenant_id="t" * 257), "out_of_range"),
    "ts_bool": (msg(ts=True), "wrong_type"),
    "ts_float": (msg(ts=1.5e12), "wrong_type"),
    "ts_garbage": (msg(ts="yesterday"), "bad_timestamp"),
    "ts_naive": (msg(ts="2026-03-01T12:00:00"), "bad_timestamp"),
    "ts_out_of_range": (msg(ts=10), "out_of_range"),
    "nan": (b'{"event_id":"e","ts":1772366400000,"tenant_id":"t","latency_ms":NaN}',
            "invalid_json"),
    "inf": (b'{"event_id":"e","ts":1772366400000,"tenant_id":"t","latency_ms":Infinity}',
            "invalid_json"),
    "huge_int": (b'{"event_id":"e","ts":1772366400000,"tenant_id":"t","input_tokens":'
                 + b"9" * 40 + b"}", "wrong_type"),  # parsed as a float
    "negative_tokens": (msg(input_tokens=-1), "out_of_range"),
    "tokens_string": (msg(output_tokens="12"), "wrong_type"),
    "embedding_wrong_dim": (msg(embedding=[0.1] * 10), "embedding_dim"),
    "embedding_strings": (msg(embedding=["a"] * 384), "embedding_value"),
    "embedding_bools": (msg(embedding=[True] * 384), "embedding_value"),
    "embedding_nested": (msg(embedding=[[0.1]] * 384), "embedding_value"),
    "embedding_overflow": (msg(embedding=[1e300] * 384), "embedding_value"),
    "embedding_not_list": (msg(embedding="0.1,0.2"), "wrong_type"),
    "embedding_b64_wrong_dim": (msg(embedding_b64=b64([0.1] * 383)), "embedding_dim"),
    "embedding_b64_odd_bytes": (msg(embedding_b64=base64.b64encode(b"x" * 1537).decode()),
                                "embedding_dim"),
    "embedding_b64_nan": (msg(embedding_b64=b64([0.1] * 383 + [np.nan])), "embedding_value"),
    "embedding_b64_inf16": (msg(embedding_b64=b64([0.1] * 383 + [np.inf], "<f2")),
                            "embedding_value"),
    "embedding_b64_not_base64": (msg(embedding_b64="not base64!" * 100), "embedding_value"),
    "embedding_b64_list": (msg(embedding_b64=[0.1] * 384), "wrong_type"),
    "metadata_not_object": (msg(metadata=[1]), "wrong_type"),
    "metadata_huge": (msg(metadata={"k": "v" * 20_000}), "metadata_too_large"),
    "non_utf8": (b'{"event_id":"e","ts":1,"tenant_id":"\xff\xfe"}', "not_utf8"),
    "oversized": (msg(prompt="x" * (MAX_EVENT_BYTES + 1)), "oversized"),
    "status_string": (msg(status="200"), "wrong_type"),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_events_are_accepted(name):
    e = parse_event(GOOD[name])
    assert e.ts_iso().endswith("Z")
    assert e.tenant_id == orjson.loads(GOOD[name])["tenant_id"]  # stored verbatim


def test_timestamps_normalise_to_the_same_utc_instant():
    a = parse_event(GOOD["rfc3339_z"]).ts_ms
    b = parse_event(GOOD["epoch_ms"]).ts_ms
    c = parse_event(GOOD["rfc3339_offset"]).ts_ms
    assert a == b == c - 250


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_events_are_rejected_with_a_reason(name):
    raw, reason = BAD[name]
    with pytest.raises(Rejected) as exc:
        parse_event(raw)
    assert exc.value.reason == reason


def test_schema_files_are_valid_json_and_name_the_contract_fields():
    event = json.loads((SCHEMAS / "api_log.schema.json").read_text())
    alert = json.loads((SCHEMAS / "alert.schema.json").read_text())
    assert set(event["required"]) == {"event_id", "ts", "tenant_id"}
    assert {"alert_id", "ts", "emitted_at", "tenant_id", "severity", "detector", "score",
            "threshold", "events_seen", "related_tenants", "evidence",
            "detector_version"} <= set(alert["properties"])


def test_alert_ids_are_deterministic_and_the_dict_matches_the_schema():
    kw = dict(tenant_id="t", detector="coverage", ts_ms=1772366400000, severity="warning",
              score=3.0, threshold=2.0, events_seen=10, episode=1,
              evidence={"summary": "reached 9 new regions in 10 queries"})
    a, b = Alert.new(**kw), Alert.new(**kw)
    assert a.alert_id == b.alert_id
    d = a.stamped().to_dict()
    schema = json.loads((SCHEMAS / "alert.schema.json").read_text())
    assert set(d) == set(schema["properties"])
    with pytest.raises(ValueError):
        Alert.new(**{**kw, "severity": "info"})


def test_embedding_b64_decodes_to_the_same_vector_as_the_json_floats():
    """float32 bytes are the JSON floats exactly; float16 bytes are them rounded to half."""
    rng = np.random.default_rng(0)
    v = rng.standard_normal(384).astype(np.float32)
    as_json = parse_event(msg(embedding=v.tolist())).embedding
    f32 = parse_event(msg(embedding_b64=b64(v))).embedding
    f16 = parse_event(msg(embedding_b64=b64(v, "<f2"))).embedding
    assert f32.dtype == f16.dtype == np.float32
    assert f32.tobytes() == as_json.tobytes()
    assert np.array_equal(f16, v.astype(np.float16).astype(np.float32))
    ones = np.ones(384, np.float32)
    big_endian = parse_event(msg(embedding_b64=b64(ones, ">f4"))).embedding
    assert not np.array_equal(big_endian, ones)     # the byte order is part of the contract
    both = parse_event(msg(embedding=v.tolist(), embedding_b64=b64(-v))).embedding
    assert both.tobytes() == as_json.tobytes()        # JSON floats win when both are sent
    with pytest.raises(Rejected) as exc:
        parse_event(msg(embedding_b64=b64(v)), embedding_dim=512)
    assert exc.value.reason == "embedding_dim"


@pytest.mark.parametrize("value,ok", [(3.4028234663852886e38, True), (-3.4028234663852886e38, True),
                                      (3.4028235677973362e38, True),   # rounds down to max
                                      (3.4028235677973366e38, False),  # rounds to infinity
                                      (1e-46, True), (1e39, False)])
def test_embedding_accepted_exactly_while_it_fits_float32(value, ok):
    """The all-floats fast path and the general path agree at float32's edge."""
    for emb in ([0.5] * 383 + [value], [0] * 383 + [value]):   # floats only / with ints
        if ok:
            e = parse_event(msg(embedding=emb))
            assert e.embedding.dtype == np.float32 and np.isfinite(e.embedding).all()
        else:
            with pytest.raises(Rejected) as exc:
                parse_event(msg(embedding=emb))
            assert exc.value.reason == "embedding_value"


FULL = {**BASE, "ts": 1772366400000, "api_key_id": "k1", "model": "m", "endpoint": "/v1/chat",
        "prompt": "hi", "input_tokens": 3, "output_tokens": 9, "latency_ms": 12.5,
        "status": 200, "client_ip": "10.0.0.1", "user_agent": "sdk/1.0", "metadata": {"a": 1}}
ODD = [None, "", "x", "x" * 64, "x" * 65, "x" * 128, "x" * 129, "x" * 256, "x" * 257, "x" * 1025,
       0, -1, 999, 1000, 2**31 - 1, 2**31, 10**400, True, False, 0.0, -0.0, 7.0, 1e9, 1e9 - 1,
       float("nan"), float("inf"), "12", [1], {}, {"k": "v" * 20_000}, {1: "not a str key"},
       946_684_799_999, 946_684_800_000, 4_102_444_800_000, 1.5e12, "2026-03-01T12:00:00.25Z",
       "2026-03-01T12:00:00", "yesterday", [0.5] * 384, [0] * 383 + [1.5], [0.5] * 10,
       ["a"] * 384, [0.5] * 383 + [1e39], type("S", (str,), {})("s"), type("I", (int,), {})(5)]


B64 = [b64([0.5] * 384), b64([0.5] * 384, "<f2"), b64([0.5] * 383), b64([0.5] * 383 + [np.nan]),
       b64([0.5] * 383 + [np.inf], "<f2"), "", "not base64!", b64([0.5] * 384) + "\n"]


def _outcome(fn, obj):
    try:
        e = fn(obj, 384)
    except Rejected as r:
        return ("rejected", r.reason, r.detail)
    except (TypeError, OverflowError) as exc:
        return (type(exc).__name__,)
    if e is None:
        return None
    return tuple((f, type(v), (v.dtype, v.tobytes()) if isinstance(v, np.ndarray) else v)
                 for f in Event.__slots__ for v in [getattr(e, f)])


def test_the_well_typed_fast_path_agrees_with_the_careful_path():
    """_well_typed may decline (None) but never accept or reject differently."""
    records = [FULL, {**FULL, "ts": "2026-03-01T14:00:00.250+02:00"}, {**FULL, "latency_ms": 7},
               {**FULL, "embedding": [0.25] * 384, "metadata": None}]
    records += [{**FULL, f: v} for f in [*FULL, "embedding", "embedding_b64", "extra"]
                for v in ODD + B64]
    records += [{**FULL, f: v, g: w} for f, g in [("event_id", "ts"), ("ts", "latency_ms"),
                                                  ("status", "metadata"), ("metadata", "prompt"),
                                                  ("embedding", "input_tokens"),
                                                  ("user_agent", "embedding"),
                                                  ("embedding", "embedding_b64"),
                                                  ("status", "embedding_b64")]
                for v in ODD[::3] for w in ODD[1::3]]
    taken = 0
    for obj in records:
        fast = _outcome(_well_typed, obj)
        if fast is not None:
            taken += 1
            assert fast == _outcome(_validate_carefully, obj), obj
    assert taken > len(records) // 10   # the fast path is really exercised
    assert _well_typed(FULL, 384) is not None


def test_every_rejection_reason_is_documented_and_declared():
    """README's list of DLQ reasons, REASONS, and every reason the code emits are one set."""
    import re
    from pathlib import Path

    from pipeline.contracts.events import REASONS
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    listed = readme[readme.index("Rejection reasons:"):]
    listed = listed[:listed.index("\n\n")]
    assert set(re.findall(r"`(\w+)`", listed)) == set(REASONS)
    emitted = set()
    for f in (root / "pipeline").rglob("*.py"):
        text = f.read_text()
        emitted |= set(re.findall(r'Rejected\(\s*"(\w+)"', text))
        emitted |= set(re.findall(r'dlq_record\([^)]*?"(\w+)"', text, re.S))
    assert "internal_error" in emitted and emitted <= set(REASONS), emitted - set(REASONS)


def test_an_adapter_bug_is_an_internal_error_rejection():
    from pipeline.contracts.events import REASONS
    from pipeline.ingest import accept

    def broken(raw):
        raise KeyError("bug")
    events, rejected = accept(b'{"event_id": "e"}', broken, 384)
    assert events == [] and [r.reason for _, r in rejected] == ["internal_error"]
    assert rejected[0][1].reason in REASONS and "KeyError" in rejected[0][1].detail


def test_the_event_schema_file_is_generated_from_the_one_field_table():
    """``schemas/api_log.schema.json`` is ``python -m pipeline.contracts.fields``'s output:
    the validator and the schema come from the same table, so they cannot drift apart."""
    from pipeline.contracts.fields import SCHEMA_PATH, schema_text
    assert SCHEMA_PATH == SCHEMAS / "api_log.schema.json"
    assert SCHEMA_PATH.read_text() == schema_text()
