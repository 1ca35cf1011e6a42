"""Back-pressure from the tenant-state changelog onto detection.

A Faust table write is a dict assignment: its changelog message goes into the producer's
buffer (``app.producer.buffer``), which a background task drains. Nothing bounds that
buffer, so a backlog of new tenants (each a state write) queued writes faster than the
broker took them, each holding its tenant's serialised state: at a million long-tail
tenants the worker's memory grew with the queue, not with the live tenants (issue 15).
:func:`ebb` makes the detect agent wait after a batch until at most ``limit`` writes are
queued, so the queue, and the memory it holds, stays bounded by the setting.
"""
from __future__ import annotations


async def ebb(buffer, limit: int) -> int:
    """Wait until ``buffer`` (a Faust ``ProducerBuffer``) holds at most ``limit`` messages;
    returns the number queued when called (the metric)."""
    queued = buffer.size
    while buffer.size > limit:
        # returns after each message sent, or after 0.1 s without one
        await buffer.flush_atmost(buffer.size - limit)
    return queued
