"""``coverwatch demo``: stream live demo traffic into Kafka and print alerts as they arrive.

Used by ``make run``. The traffic is :func:`demo_traffic`: three past days of simulated benign
tenants (so the population the detector compares with is warm), then live traffic from
:func:`pipeline.simulate.traffic.iter_demo_events`: eight benign tenants (focused apps with
working sets of popular questions, a general chat product, a coding tool) and one broad
sweeper, ``nimbus-labs``, that asks never-seen prompts from every source it can reach.

Prompts are real: the shared corpus when it is next to the checkout, else the licensed
sample shipped in ``pipeline/data`` (a bare clone), else (sample deleted) synthetic text.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Iterator

import orjson

from pipeline.kafka_io import follow, producer, tenant_key
from pipeline.settings import Settings

SWEEPER = "nimbus-labs"


def add_arguments(p) -> None:
    p.add_argument("--rate", type=float, default=50.0, help="events per second")
    p.add_argument("--mode", choices=["auto", "provided", "text"], default="auto",
                   help="provided: events carry vectors; text: prompts only, the worker embeds "
                        "them (auto: provided with the corpus's MiniLM vectors, else text)")
    p.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    p.add_argument("--history-tenants", type=int, default=60,
                   help="simulated tenants whose benign past day is sent first (0: none)")


def resolve_mode(mode: str) -> str:
    """``auto``: vectors only where they are real MiniLM vectors (the corpus)."""
    if mode != "auto":
        return mode
    from pipeline.simulate.pool import build_pool
    return "provided" if build_pool("report").origin == "corpus" else "text"


def history(tenants: int, mode: str, per_tenant: int = 800, seed: int = 13,
            end_ms: int | None = None) -> list[dict]:
    """The past three days of ``tenants`` benign tenants (at most ``per_tenant`` events
    each), ending a minute before ``end_ms`` (now).

    A real deployment has thousands of tenants behind it; the detector scores a tenant
    against the population of tenants of the same age, and needs some before it judges
    (warm-up). This gives the demo worker that population, old enough (up to 16 windows) that
    a tenant's first minutes are judged against real windows rather than the wide prior.
    Hard negatives (batch jobs, benchmark runs) are left out: they look like a small sweep,
    the detection benchmark reports how often they are flagged, and the demo is about the
    sweeper. ``seed`` 13: no benign tenant of the demo alerts in any of ten delivery orders
    (``python -m pipeline.testing.interleave --demo --uneven 4``), with the corpus or the
    shipped sample; with seed 5 one or two chat products did in some, at their first window
    (how often that happens is what ``bench detect`` measures, not what a demo should show).
    """
    from pipeline.simulate.traffic import generate
    events, labels = generate(split="report", seed=seed, tenants=tenants, days=3, mode=mode)
    kept, count = [], {}
    for ev in events:
        t = ev["tenant_id"]
        if labels[t]["is_attack"] or labels[t]["hard_negative"] or count.get(t, 0) >= per_tenant:
            continue
        count[t] = count.get(t, 0) + 1
        kept.append(ev)
    end = int(time.time() * 1000) if end_ms is None else end_ms
    shift = end - 60_000 - kept[-1]["ts"] if kept else 0
    for ev in kept:
        ev["ts"] += shift
    return kept


def live(rate: float, mode: str, *, realtime: bool = True, limit: int | None = None,
         start_ms: int | None = None) -> Iterator[dict]:
    """Live demo events. Not ``realtime``: no sleeping, and event time advances by
    ``1/rate`` per event from ``start_ms``, as if they had been sent live (tests)."""
    from pipeline.simulate.traffic import iter_demo_events
    events = iter_demo_events(rate, mode=mode, realtime=realtime, limit=limit)
    if realtime:
        yield from events
        return
    t0 = int(time.time() * 1000) if start_ms is None else start_ms
    for i, ev in enumerate(events):
        ev["ts"] = t0 + int(i * 1000 / rate)
        yield ev


def demo_traffic(rate: float = 50.0, mode: str = "auto", *, history_tenants: int = 60,
                 realtime: bool = True, limit: int | None = None,
                 start_ms: int | None = None) -> tuple[list[dict], Iterator[dict]]:
    """What ``coverwatch demo`` sends: (the warm-up history, the live events)."""
    mode = resolve_mode(mode)
    now = int(time.time() * 1000) if start_ms is None else start_ms
    past = history(history_tenants, mode, end_ms=now) if history_tenants else []
    return past, live(rate, mode, realtime=realtime, limit=limit, start_ms=now)


def _produce(s: Settings, args, stop: threading.Event, state: dict) -> None:
    p = producer(s)
    past, events = demo_traffic(args.rate, args.mode, history_tenants=args.history_tenants)
    if past:
        print(f"sending three past days of {len({e['tenant_id'] for e in past})} benign "
              f"tenants ({len(past):,} events) so the population is warm", file=sys.stderr)
    for ev in past:
        raw = orjson.dumps(ev)
        p.send(s.topic_logs, value=raw, key=tenant_key(raw))
    p.flush()
    state["sent"] += len(past)
    state["live_at"] = time.monotonic()
    for ev in events:
        if stop.is_set():
            break
        raw = orjson.dumps(ev)
        p.send(s.topic_logs, value=raw, key=tenant_key(raw))
        state["sent"] += 1
    p.flush()
    p.close()


def format_alert(alert: dict, seconds: float) -> str:
    """One alert as the demo prints it; ``seconds`` since live traffic started. The demo
    knows who attacks (only ``nimbus-labs``), so it says when an alert is a false positive
    rather than leave the viewer to guess."""
    truth = ("the demo's attacker" if alert["tenant_id"] == SWEEPER else
             "a benign tenant of the demo: a FALSE POSITIVE (see README, Quick start)")
    return (f"[{alert['severity'].upper():8}] +{seconds:.0f} s {alert['tenant_id']}: "
            f"{alert['evidence']['summary']} ({alert['detector']}, "
            f"after {alert['events_seen']:,} queries) <- {truth}")


def run(args) -> int:
    import logging
    from pipeline.progress import progress
    from pipeline.simulate.pool import build_pool
    logging.getLogger("kafka").setLevel(logging.ERROR)   # client chatter, not the demo's
    s = Settings.from_env()
    origin = build_pool("report").origin
    print({"corpus": "prompts: the shared corpus",
           "sample": "prompts: the licensed sample shipped in pipeline/data (no corpus found)",
           "synthetic": "prompts: SYNTHETIC stand-in (neither corpus nor sample found)"}[origin],
          file=sys.stderr)
    stop, state = threading.Event(), {"sent": 0, "live_at": None}
    t = threading.Thread(target=_produce, daemon=True, args=(s, args, stop, state))
    t.start()
    started = time.monotonic()
    bar = progress(desc="demo events sent", unit="ev")
    try:
        for alert in follow(s, s.topic_alerts):
            now = time.monotonic()
            bar.update(state["sent"] - bar.n)
            if alert is not None:
                bar.write(format_alert(alert, now - (state["live_at"] or now)), file=sys.stdout)
                sys.stdout.flush()
            if args.duration and now - started > args.duration:
                break
            if not t.is_alive():
                print("demo producer stopped", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        bar.close()
    return 0
