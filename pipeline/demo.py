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


def _produce(s: Settings, rate: float, mode: str, stop: threading.Event, sent: list) -> None:
    from pipeline.simulate.traffic import iter_demo_events
    p = producer(s)
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
    t = threading.Thread(target=_produce, args=(s, args.rate, args.mode, stop, sent),
                         daemon=True)
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
