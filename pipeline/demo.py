"""``coverwatch demo``: stream live demo traffic into Kafka and print alerts as they arrive.

Used by ``make run``. Traffic comes from :func:`pipeline.simulate.traffic.iter_demo_events`
(real prompts when the corpus is present, a stand-in otherwise): eight benign tenants and
one broad sweeper, stamped with the wall clock.
"""
from __future__ import annotations

import sys
import threading
import time

import orjson

from pipeline.kafka_io import follow, producer, tenant_key
from pipeline.settings import Settings


def add_arguments(p) -> None:
    p.add_argument("--rate", type=float, default=50.0, help="events per second")
    p.add_argument("--mode", choices=["provided", "text"], default="provided")
    p.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    p.add_argument("--history-tenants", type=int, default=60,
                   help="simulated tenants whose benign past day is sent first (0: none)")


def history(tenants: int, mode: str, per_tenant: int = 300, seed: int = 5) -> list[dict]:
    """The past day of ``tenants`` benign tenants, ending now.

    A real deployment has thousands of tenants behind it; the detector scores a tenant
    against the population of tenants of the same age, and needs some before it judges
    (warm-up). This gives the demo worker that population before the live traffic starts.
    """
    from pipeline.simulate.traffic import generate
    events, labels = generate(split="report", seed=seed, tenants=tenants, days=1, mode=mode)
    kept, count = [], {}
    for ev in events:
        t = ev["tenant_id"]
        if labels[t]["is_attack"] or count.get(t, 0) >= per_tenant:
            continue
        count[t] = count.get(t, 0) + 1
        kept.append(ev)
    shift = int(time.time() * 1000) - 60_000 - kept[-1]["ts"] if kept else 0
    for ev in kept:
        ev["ts"] += shift
    return kept


def _produce(s: Settings, rate: float, mode: str, stop: threading.Event, sent: list,
             history_tenants: int) -> None:
    from pipeline.simulate.traffic import iter_demo_events
    p = producer(s)
    if history_tenants:
        past = history(history_tenants, mode)
        print(f"sending the past day of {history_tenants} benign tenants "
              f"({len(past):,} events) so the population is warm...", file=sys.stderr)
        for ev in past:
            raw = orjson.dumps(ev)
            p.send(s.topic_logs, value=raw, key=tenant_key(raw))
        p.flush()
        sent[0] += len(past)
    for ev in iter_demo_events(rate, mode=mode):
        if stop.is_set():
            break
        raw = orjson.dumps(ev)
        p.send(s.topic_logs, value=raw, key=tenant_key(raw))
        sent[0] += 1
    p.flush()
    p.close()


def run(args) -> int:
    s = Settings.from_env()
    stop, sent = threading.Event(), [0]
    t = threading.Thread(target=_produce, daemon=True,
                         args=(s, args.rate, args.mode, stop, sent, args.history_tenants))
    t.start()
    started, last_status = time.monotonic(), 0.0
    try:
        for alert in follow(s, s.topic_alerts):
            now = time.monotonic()
            if alert is not None:
                print(f"\r[{alert['severity'].upper():8}] {alert['tenant_id']}: "
                      f"{alert['evidence']['summary']} ({alert['detector']}, "
                      f"after {alert['events_seen']:,} queries)", flush=True)
            elif now - last_status > 10:
                print(f"\r... {sent[0]:,} events sent, {now - started:.0f} s", end="",
                      file=sys.stderr, flush=True)
                last_status = now
            if args.duration and now - started > args.duration:
                break
            if not t.is_alive():
                print("demo producer stopped", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
    return 0
