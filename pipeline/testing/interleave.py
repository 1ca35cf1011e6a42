"""Alert timing against delivery order: one stream, several orders, each tenant's first alert.

Kafka keeps each tenant's events in order (a tenant is one key, so one partition) but not
the order *between* tenants: how partitions interleave depends on polls, lag, restarts and
rebalances. The detector core judges a tenant's window against a population learned from
every tenant's windows, so what it decides can depend on that interleaving. This module
feeds the same events to the plain core (:class:`pipeline.process.Processor`, no broker) in
several orders that each keep every tenant's own order, and reports, per tenant, the
``events_seen`` of its first alert in each (issue 15; ``tests/test_delivery_order.py``).

    python -m pipeline.testing.interleave [--seed 7] [--tenants 30] [--days 1]

prints that table and the largest spread (the defaults are the fault suite's simulated day).
``--demo`` takes ``make run``'s traffic instead (its three-day history, then 4,000 live events;
``COVERWATCH_CORPUS=/nonexistent`` for a bare clone's), ``--uneven N`` adds N orders whose
partitions are polled at different sizes (a backlog read unevenly, as a starting worker does).
Only the per-tenant detector's alerts are compared: the campaign stage is left out.
"""
from __future__ import annotations

import argparse
import copy
import random
from collections import defaultdict

from pipeline import build
from pipeline.contracts.events import Event, validate
from pipeline.settings import Settings
from pipeline.simulate.traffic import generate
from pipeline.stream.codec import partition_for

# the fault suite's simulated day (tests/test_faults.py: simulated_day)
FAULT_DAY = {"seed": 7, "tenants": 30, "days": 1}
WINDOW = 50          # events per tenant window (CoverwatchDetector's default)


def day(seed: int, tenants: int, days: int) -> list[dict]:
    """Simulated traffic (calib split, a hydra campaign) as raw records, in event-time order."""
    raw, _ = generate(split="calib", seed=seed, tenants=tenants, days=days,
                      hydra_accounts=(20, 25))
    return sorted(raw, key=lambda r: r["ts"])      # stable, as replay sorts


def by_partition(records: list[dict], partitions: int) -> dict[int, list[int]]:
    """Record indexes per partition (Kafka's default partitioner on the tenant key)."""
    parts: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        parts[partition_for(r["tenant_id"], partitions)].append(i)
    return dict(parts)


def round_robin(parts: dict[int, list[int]], poll: dict[int, int]) -> list[int]:
    """Partitions consumed in turn, ``poll[k]`` records of partition ``k`` each round."""
    order: list[int] = []
    at = dict.fromkeys(parts, 0)
    total = sum(len(p) for p in parts.values())
    while len(order) < total:
        for k in sorted(parts):
            order += parts[k][at[k]:at[k] + poll[k]]
            at[k] += poll[k]
    return order


def interleavings(records: list[dict], partitions: int = 4, poll: int = 500,
                  seed: int = 1) -> dict[str, list[int]]:
    """Orders of ``records`` (as index lists) that keep every tenant's own order:

    - ``event time``: the order ``coverwatch replay`` reads;
    - ``partitions, polls of N``: ``partitions`` partitions (Kafka's default partitioner on
      the tenant key) consumed round-robin, ``poll`` events of each in turn;
    - ``partition by partition`` (and reversed): a backlog read one whole partition after
      another, as after a rebalance or an outage of some partitions;
    - ``tenants shuffled``: each next event from a random tenant (weighted by what it has
      left), so tenants drift arbitrarily far apart in event time;
    - ``tenant by tenant``: each tenant's whole stream in turn (the extreme)."""
    tenants: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        tenants[r["tenant_id"]].append(i)
    parts = by_partition(records, partitions)
    keys = sorted(parts)
    rr = round_robin(parts, dict.fromkeys(keys, poll))
    tags = [t for t, idx in tenants.items() for _ in idx]
    random.Random(seed).shuffle(tags)
    its = {t: iter(idx) for t, idx in tenants.items()}
    return {
        "event time": list(range(len(records))),
        f"{partitions} partitions, polls of {poll}": rr,
        "partition by partition": [i for k in keys for i in parts[k]],
        "partition by partition, reversed": [i for k in reversed(keys) for i in parts[k]],
        "tenants shuffled": [next(its[t]) for t in tags],
        "tenant by tenant": [i for t in sorted(tenants) for i in tenants[t]],
    }


def uneven_polls(records: list[dict], partitions: int = 4, seeds: int = 8,
                 sizes: tuple = (50, 200, 500, 1000, 3000)) -> dict[str, list[int]]:
    """Orders in which each partition is polled at its own size (drawn from ``sizes``) in
    each round: some partitions run ahead of others, as when a worker reads a backlog."""
    parts = by_partition(records, partitions)
    out = {}
    for seed in range(seeds):
        rng = random.Random(seed)
        poll = {k: rng.choice(sizes) for k in sorted(parts)}
        out["uneven polls " + "/".join(str(poll[k]) for k in sorted(parts))] = \
            round_robin(parts, poll)
    return out


def first_alerts(events: list[Event], order: list[int], batch: int = 2048) -> dict[str, int]:
    """``events_seen`` of each tenant's first detector alert when the core (a fresh
    processor with the default settings, no campaign stage) is fed ``events`` in ``order``
    (copies: the processor fills in what it embeds)."""
    proc = build.processor(Settings(), stage_here=False)[0]
    fed = []
    for i in order:
        e = copy.copy(events[i])
        e.extra = dict(e.extra)
        fed.append(e)
    first: dict[str, int] = {}
    for lo in range(0, len(fed), batch):
        for a in proc.process(fed[lo:lo + batch])[2]:
            first.setdefault(a.tenant_id, a.events_seen)
    return first


def measure(records: list[dict], uneven: int = 0, **kw) -> dict[str, dict[str, int]]:
    """Order name -> {tenant: events_seen of its first alert}."""
    events = [validate(r) for r in records]
    orders = interleavings(records, **kw)
    if uneven:
        orders.update(uneven_polls(records, seeds=uneven))
    return {name: first_alerts(events, order) for name, order in orders.items()}


def demo_records(live: int = 4000) -> list[dict]:
    """``make run``'s traffic as the worker receives it: the history, then live events."""
    from pipeline.demo import demo_traffic
    past, events = demo_traffic(50.0, "auto", realtime=False, limit=live,
                                start_ms=1767225600000)
    return past + list(events)


def spread(results: dict[str, dict[str, int]]) -> dict[str, int | None]:
    """Per tenant alerting in any order: max - min of its first alert's events_seen over the
    orders, or None when it does not alert in every order."""
    tenants = set().union(*results.values())
    out: dict[str, int | None] = {}
    for t in sorted(tenants):
        seen = [r.get(t) for r in results.values()]
        out[t] = None if None in seen else max(seen) - min(seen)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=FAULT_DAY["seed"])
    ap.add_argument("--tenants", type=int, default=FAULT_DAY["tenants"])
    ap.add_argument("--days", type=int, default=FAULT_DAY["days"])
    ap.add_argument("--demo", action="store_true", help="make run's traffic instead")
    ap.add_argument("--uneven", type=int, default=0, help="orders with uneven polls to add")
    a = ap.parse_args(argv)
    records = demo_records() if a.demo else day(a.seed, a.tenants, a.days)
    results = measure(records, uneven=a.uneven)
    names = list(results)
    print(f"{len(records):,} events; first alert's events_seen per delivery order")
    print("tenant".ljust(14) + "".join(f"{i:>8}" for i in range(len(names))) + "  spread")
    sp = spread(results)
    for t, s in sp.items():
        print(t.ljust(14) + "".join(f"{str(results[n].get(t, '-')):>8}" for n in names)
              + f"  {'not in every order' if s is None else s}")
    for i, n in enumerate(names):
        print(f"  {i}: {n} ({len(results[n])} tenants alert)")
    missing = [t for t, s in sp.items() if s is None]
    worst = max((s for s in sp.values() if s is not None), default=0)
    print(f"largest spread {worst} events (one window is {WINDOW}); "
          f"{len(missing)} tenant(s) alert in some orders only")
    return 0 if not missing and worst <= WINDOW else 1


if __name__ == "__main__":
    raise SystemExit(main())
