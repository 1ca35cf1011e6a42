"""``bedrock``: AWS Bedrock model invocation logs -> contract events.

Bedrock writes invocation logs to CloudWatch Logs or S3, never Kafka; what reaches the topic
is usually a CloudWatch Logs subscription batch (gzip, often base64 too, or already
unpacked JSON with ``logEvents[].message``), or the log records themselves (one, an array,
or NDJSON as in the S3 objects). Everything is unwrapped here. Bedrock has no tenant field:
the default tenant is a caller-supplied ``requestMetadata.tenant_id``, else the account of
the caller's identity ARN. The ARN is exposed as virtual paths ``identity.account``,
``identity.role`` (role or user name) and ``identity.principal`` (the ARN without the
assumed-role session, the default credential), usable in ``tenant_field``/``key_field``.
Bedrock writes RFC 3339 in UTC; exports that drop the zone (``2026-03-01 12:00:00.000``, as
SIEMs normalise it) are read as UTC. Llama and Mistral bodies carry the chat template in
``prompt``; the body parser keeps the last user turn's text.

>>> [e] = make()(b'{"schemaType": "ModelInvocationLog", "timestamp": "2026-03-01T12:00:00Z",'
...   b' "accountId": "111122223333", "requestId": "req-1", "operation": "Converse",'
...   b' "identity": {"arn": "arn:aws:sts::111122223333:assumed-role/app/s-1"},'
...   b' "modelId": "amazon.nova-lite-v1:0", "input": {"inputTokenCount": 5}, "output": {}}')
>>> e["tenant_id"], e["ts"], e["endpoint"], e["input_tokens"], e["status"]
('111122223333', 1772366400000, 'Converse', 5, 200)
"""
from __future__ import annotations

import base64
import binascii
import gzip
import io
import zlib
from typing import Any

import orjson

from pipeline.adapters import bodies
from pipeline.adapters.common import (build, count, digest_id, get_path, load_records,
                                      map_all, obj, options, reject, shape_guard)
from pipeline.contracts.events import MAX_EVENT_BYTES

FORMAT = "bedrock"
TENANT_FIELDS = ("requestMetadata.tenant_id", "identity.account", "accountId")
KEY_FIELDS = ("identity.principal",)
ERROR_STATUS = {"ValidationException": 400, "AccessDeniedException": 403,
                "ResourceNotFoundException": 404, "ModelTimeoutException": 408,
                "ModelNotReadyException": 429, "ThrottlingException": 429,
                "ServiceQuotaExceededException": 429, "ModelErrorException": 424,
                "InternalServerException": 500, "ServiceUnavailableException": 503}


def unwrap(raw: bytes) -> list:
    """Message bytes -> invocation-log records, through gzip/base64 and the CloudWatch envelope."""
    data = bytes(raw).strip()
    if data[:4] == b"H4sI":                      # base64 of a gzip stream
        try:
            data = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise reject(FORMAT, "looks like base64 but does not decode") from None
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
                data = fh.read(MAX_EVENT_BYTES * 8 + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise reject(FORMAT, f"bad gzip: {exc}") from None
        if len(data) > MAX_EVENT_BYTES * 8:
            raise reject(FORMAT, "gzip expands beyond 8 MiB")
    records = []
    for doc in load_records(data, max_bytes=MAX_EVENT_BYTES * 8):
        if isinstance(doc, dict) and "logEvents" in doc:
            if doc.get("messageType") == "CONTROL_MESSAGE":
                continue                          # CloudWatch's own reachability probe
            for le in doc.get("logEvents") or []:
                msg = le.get("message") if isinstance(le, dict) else None
                try:
                    records.append(orjson.loads(msg) if isinstance(msg, str) else msg)
                except orjson.JSONDecodeError:
                    records.append({"unparseable_message": msg[:1000], "logEvent": le.get("id")})
        else:
            records.append(doc)
    return records


def _identity(arn: Any) -> dict:
    """``arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`` -> account, role, principal."""
    parts = arn.split(":", 5) if isinstance(arn, str) else []
    if len(parts) != 6 or parts[0] != "arn":
        return {}
    account, res = parts[4], parts[5].split("/")
    role = res[1] if res[0] == "assumed-role" and len(res) > 1 else res[-1]
    principal = ":".join(parts[:5] + ["/".join(res[:2])]) if res[0] == "assumed-role" else arn
    return {"account": account or None, "role": role or None, "principal": principal}


def make(**opts: Any):
    """Adapter factory; options: tenant_field, key_field, default_tenant, key_salt."""
    o = options(FORMAT, opts, tenant=TENANT_FIELDS, key=KEY_FIELDS)

    def one(r: Any) -> dict:
        if not isinstance(r, dict) or "modelId" not in r or "timestamp" not in r:
            raise reject(FORMAT, "not a ModelInvocationLog record (needs modelId and timestamp)")
        ident = obj(r.get("identity"))
        view = {**r, "identity": {**ident, **_identity(ident.get("arn"))}}
        inp, out = obj(r.get("input")), obj(r.get("output"))
        prompt = bodies.prompt_of(inp.get("inputBodyJson"))
        if inp.get("inputBodyS3Path") and not prompt.text:
            prompt = bodies.Prompt(None, "offloaded_to_s3")
        body_in, body_out = bodies.usage_of(out.get("outputBodyJson"))
        in_tok, out_tok = count(inp.get("inputTokenCount")), count(out.get("outputTokenCount"))
        err = r.get("errorCode")
        latency = get_path(out, "outputBodyJson.metrics.latencyMs")
        return build(
            o, event_id=r.get("requestId") or digest_id(r), ts=r["timestamp"], naive_utc=True,
            lookup=lambda path: get_path(view, path), prompt=prompt,
            model=r.get("modelId") or None, endpoint=r.get("operation"),
            input_tokens=in_tok if in_tok is not None else body_in,
            output_tokens=out_tok if out_tok is not None else body_out,
            latency_ms=float(latency) if isinstance(latency, (int, float)) else None,
            status=ERROR_STATUS.get(err, 500) if err else 200,
            meta={"account_id": r.get("accountId"), "region": r.get("region"),
                  "inference_region": r.get("inferenceRegion"), "error_code": err,
                  "cache_read_tokens": inp.get("cacheReadInputTokenCount"),
                  "cache_write_tokens": inp.get("cacheWriteInputTokenCount"),
                  "request_metadata": _small(r.get("requestMetadata")),
                  "schema_version": r.get("schemaVersion")})

    def adapter(raw: bytes) -> list[dict]:
        return map_all(FORMAT, shape_guard(FORMAT, unwrap)(raw), one)
    return adapter


def _small(d: Any) -> dict | None:
    if not isinstance(d, dict):
        return None
    return {str(k)[:64]: str(v)[:256] for k, v in list(d.items())[:16]}
