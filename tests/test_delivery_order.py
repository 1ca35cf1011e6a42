"""Alert timing against delivery order (issue 15): the same events, fed to the plain detector
core in orders that each keep every tenant's own order (as Kafka does), must make the same
tenants alert, each tenant's first alert within one window (50 of its events) of the others.

No broker: the property belongs to the core, which the worker, replay and the benchmarks all
run (:mod:`pipeline.testing.interleave` builds the orders; rerun the table with
``python -m pipeline.testing.interleave``).
"""
from __future__ import annotations

import pytest

from pipeline.contracts.events import validate
from pipeline.simulate.corpus import corpus_available
from pipeline.testing.interleave import (FAULT_DAY, WINDOW, day, first_alerts, interleavings,
                                         measure, spread)


def _check(results: dict) -> None:
    sp = spread(results)
    table = {t: {n: r.get(t) for n, r in results.items()} for t in sp}
    missing = {t: table[t] for t, s in sp.items() if s is None}
    assert not missing, f"tenants alerting in some delivery orders only: {missing}"
    late = {t: table[t] for t, s in sp.items() if s > WINDOW}
    assert not late, f"first alerts more than one window apart: {late}"


def test_check_catches_a_missing_or_late_first_alert():
    _check({"a": {"t1": 50, "t2": 100}, "b": {"t1": 100, "t2": 100}})   # one window apart
    with pytest.raises(AssertionError, match="some delivery orders only"):
        _check({"a": {"t1": 50}, "b": {}})
    with pytest.raises(AssertionError, match="more than one window apart"):
        _check({"a": {"t1": 50}, "b": {"t1": 150}})


def test_interleavings_keep_each_tenants_order_and_differ():
    records = day(**FAULT_DAY)[:3000]
    orders = interleavings(records)
    assert len(orders) == 6
    for name, order in orders.items():
        assert sorted(order) == list(range(len(records))), name
        per: dict = {}
        for i in order:
            per.setdefault(records[i]["tenant_id"], []).append(i)
        assert all(idx == sorted(idx) for idx in per.values()), name
        if name != "event time":
            assert order != orders["event time"], name


# Without the prompt corpus the day is the stand-in traffic (a user's bare clone): there, on
# 8156563, 1 of its alerting tenants (t-0ee5cbe1, third window) alerts in three of the six
# orders only: the same order dependence as the sixty-tenant day's below, on other traffic.
@pytest.mark.xfail(not corpus_available(), strict=False,
                   reason="stand-in traffic (no prompt corpus): one tenant's third-window "
                          "alert depends on the delivery order, as on the sixty-tenant day")
def test_fault_suite_day_alerts_at_the_same_window_in_every_delivery_order():
    """The fault suite's simulated day (45,548 events, 30 tenants + a hydra campaign):
    measured on commits 64dc4a4 and 0433300, 43 tenants alert in each of the six orders,
    every one at the same events_seen (spread 0)."""
    results = measure(day(**FAULT_DAY))
    assert all(len(r) >= 30 for r in results.values()), {n: len(r) for n, r in results.items()}
    _check(results)


@pytest.fixture(scope="module")
def sixty():
    """A busier day (48,406 events, 60 tenants + a hydra campaign), validated once."""
    records = day(seed=7, tenants=60, days=1)
    return records, [validate(r) for r in records]


def test_sixty_tenant_day_is_order_free_when_partitions_are_read_together(sixty):
    """What holds today for a consumer reading its partitions together (Kafka's polls):
    4 partitions round-robin, 500 or 2,000 events of each in turn (partitions differ in
    size, so one then runs up to 7.3 or 8.1 hours of event time ahead of another), give
    exactly the alerts of event-time order. Measured (64dc4a4, 0433300): polls of 5,000
    (13.4 hours) move two tenants (one alerts only in event time, one only in the polls),
    10,000 six."""
    records, events = sixty
    want = first_alerts(events, list(range(len(records))))
    assert len(want) >= 30
    for poll in (500, 2000):
        order = interleavings(records, poll=poll)[f"4 partitions, polls of {poll}"]
        assert first_alerts(events, order) == want, poll


@pytest.mark.xfail(strict=True, reason=(
    "measured on commits 64dc4a4 and 0433300 (48,406 events, 60 tenants): in event-time "
    "order and in "
    "4-partition polls of 500, 39 tenants alert; partition by partition 45 (reversed: 43), "
    "tenants shuffled 45, tenant by tenant 45. Six tenants (4 attackers, 2 benign) alert at "
    "their first window (events_seen 50, one at 100) only when their partition or they "
    "themselves are delivered far ahead of the others: a window is judged against the "
    "population as it stands, and that depends on which other tenants' windows it has "
    "learned yet. Every tenant alerting in all six orders alerts at the same events_seen."))
def test_sixty_tenant_day_alerts_at_the_same_window_in_every_delivery_order(sixty):
    records, _ = sixty
    _check(measure(records))
