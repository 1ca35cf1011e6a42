"""Re-delivered events after a SIGKILL, re-formed into other batches, are stored once (raw).

On the real embedded engine with merges stopped: a batch stored under one token, then the
same events delivered again in batches of other boundaries (so other tokens), as after a
worker died between its insert and its offset commit.
"""
from __future__ import annotations

import uuid

from pipeline.contracts.events import Event
from pipeline.detect.base import Scored
from pipeline.sinks.clickhouse import token
from pipeline.stream.redelivery import RedeliveryGuard, still_suspect
from tests.test_sink import alert, rows, sink  # noqa: F401 - the sink fixture
from tests.conftest import raw_counts

T0 = 1772366400000


def events(lo: int, hi: int, partition: int = 0):
    out = []
    for i in range(lo, hi):
        e = Event(f"e{partition}-{i}", T0 + i, f"t{i % 5}")
        e.extra["pos"] = (partition, i << 16)
        out.append(e)
    return out, [Scored(cell=i + 1) for i in range(lo, hi)]


def tok() -> str:
    return token("events", uuid.uuid4().hex)


def test_a_re_formed_batch_is_not_stored_twice(sink):  # noqa: F811
    before = RedeliveryGuard(sink)
    before.write(*events(0, 100), [alert()], tok())              # stored, then the kill
    after = RedeliveryGuard(sink)                                  # the restarted worker
    after.write(*events(40, 130), [alert()], tok())              # other boundaries
    assert 0 not in after.clean                                    # 40..99 were stored
    after.write(*events(130, 200), [], tok())
    assert 0 in after.clean                                        # past the stored prefix
    c = raw_counts(rows(sink))
    assert (c["event_rows"], c["events"], c["duplicates"]) == (200, 200, 0), c
    assert c["alert_rows"] == 1 and after.left_out == 60


def test_without_the_guard_the_raw_rows_double(sink):  # noqa: F811
    """The defect, shown: another token for the same events stores them again."""
    sink.write(*events(0, 100), [], tok())
    sink.write(*events(40, 130), [], tok())
    c = raw_counts(rows(sink))
    assert c["event_rows"] == 190 and c["events"] == 130


def test_a_long_tail_batch_is_looked_up_in_parts(sink):  # noqa: F811
    """A re-delivered batch of 6,000 distinct tenants: its ids make a look-up above
    ClickHouse's 256 KiB query limit, which failed (and was retried) forever."""
    def tail(lo, hi):
        out = []
        for i in range(lo, hi):
            e = Event(f"tail-event-{i:07d}", T0 + i, f"tail-tenant-{i:07d}")
            e.extra["pos"] = (2, i << 16)
            out.append(e)
        return out, [Scored(cell=i + 1) for i in range(lo, hi)]
    RedeliveryGuard(sink).write(*tail(0, 5000), [], tok())     # stored, then the kill
    after = RedeliveryGuard(sink)
    after.write(*tail(0, 6000), [], tok())
    c = raw_counts(rows(sink))
    assert (c["event_rows"], c["events"], c["duplicates"]) == (6000, 6000, 0), c
    assert after.left_out == 5000


def test_clean_partitions_cost_no_look_up(sink):  # noqa: F811
    g = RedeliveryGuard(sink)
    g.write(*events(0, 10, partition=1), [], tok())
    assert g.clean == {1}
    g.revoked({1})
    assert g.clean == set()


def test_still_suspect():
    ev, _ = events(0, 4, partition=2)
    assert still_suspect(ev, {2, 3}, set()) == {3}                 # 3 had no event here
    assert still_suspect(ev, {2}, {(ev[0].tenant_id, ev[0].event_id)}) == {2}
