"""Input adapters: turn what a gateway already logs into contract events.

An adapter maps the raw bytes of one message (or one JSONL line) to a list of
contract-shaped dicts (one gateway record may hold many requests); validation then runs on
each exactly as for native events. An adapter that cannot map a record raises
:class:`pipeline.contracts.events.Rejected`, and the record goes to the DLQ like any bad
event. ``coverwatch`` (the default) is our own contract: one JSON object per message.
The gateway formats (``otel-genai``, ``litellm``, ``kong``, ``bedrock``; docs/input-formats.md)
take options (``tenant_field``, ``key_field``, ``default_tenant``, ``key_salt``) from
COVERWATCH_ADAPTER_OPTIONS, share one body parser (:mod:`pipeline.adapters.bodies`), hash
credentials, and reject what they cannot map with reason ``adapter``.

>>> get_adapter("coverwatch")(b'{"event_id": "e", "ts": 1772366400000, "tenant_id": "t"}')
[{'event_id': 'e', 'ts': 1772366400000, 'tenant_id': 't'}]
"""
from __future__ import annotations

from typing import Any, Callable

from pipeline.contracts.events import decode_json

Adapter = Callable[[bytes], list[Any]]


def native(raw: bytes) -> list[Any]:
    return [decode_json(raw)]


ADAPTERS: dict[str, str] = {
    "coverwatch": "pipeline.adapters:native",
    "otel-genai": "pipeline.adapters.otel:make",
    "litellm": "pipeline.adapters.litellm:make",
    "kong": "pipeline.adapters.kong:make",
    "bedrock": "pipeline.adapters.bedrock:make",
}


def get_adapter(name: str = "coverwatch", **options) -> Adapter:
    if name not in ADAPTERS:
        raise SystemExit(f"unknown input format {name!r}; one of {', '.join(ADAPTERS)}")
    module, _, attr = ADAPTERS[name].partition(":")
    from importlib import import_module
    factory = getattr(import_module(module), attr)
    if name == "coverwatch":
        if options:
            raise SystemExit("the coverwatch input format takes no adapter options")
        return factory
    return factory(**options)
