"""Raw message -> validated events and rejections: the front door of worker and replay alike."""
from __future__ import annotations

import orjson

from pipeline.adapters import Adapter
from pipeline.contracts.events import Event, Rejected, validate


def accept(raw: bytes, adapter: Adapter, embedding_dim: int | None
           ) -> tuple[list[Event], list[tuple[bytes, Rejected]]]:
    """Map and validate one message; every record either becomes an event or a rejection.

    A rejection carries the bytes to dead-letter: the whole message when it could not be
    mapped at all, the single record when one of several in a message is bad.
    """
    try:
        records = adapter(raw)
    except Rejected as r:
        return [], [(raw, r)]
    except Exception as exc:  # noqa: BLE001 - an adapter bug must not stop the worker
        return [], [(raw, Rejected("internal_error", repr(exc)[:300]))]
    events, rejected = [], []
    for rec in records:
        try:
            events.append(validate(rec, embedding_dim=embedding_dim))
        except Rejected as r:
            rejected.append((raw if len(records) == 1 else orjson.dumps(rec), r))
        except Exception as exc:  # noqa: BLE001
            rejected.append((raw, Rejected("internal_error", repr(exc)[:300])))
    return events, rejected
