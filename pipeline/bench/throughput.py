"""``coverwatch bench throughput``: how fast, how late and how big, against the Python Kafka ceiling.

One run, on one real Kafka broker (started here on free ports), for each input mode
(``provided``: realistic events with their 384-d MiniLM vector; ``text``: the same events
with the prompt only, embedded by the worker):

1. **core** (``_core`` subprocess under ``taskset -c 0``): :class:`Processor` over pre-parsed
   events, no Kafka, one core; throughput vs 1k/10k/100k tenants and memory per tenant.
2. **bare consumer**: N realistic events are produced to a 4-partition topic; a bare
   aiokafka consumer reads and ``orjson.loads`` every message and does nothing else.
3. **end to end**: ``coverwatch worker`` (subprocess, its own topics, app id and embedded
   ClickHouse) is started on that same pre-loaded topic; timed from the worker answering
   ``/metrics`` (startup reported separately) until ``coverwatch_events_detected_total``
   reaches N, which the worker counts after the batch's ClickHouse insert returned and its
   alerts were sent. The row count in ClickHouse is checked afterwards. Run twice: the
   default mode (ingest stage, then the internal repartition topic) and the keyed-input mode
   (``COVERWATCH_INPUT_KEYED=1``: the input topic is keyed by tenant, as ``produce`` keys it,
   and is detected from directly, no repartition hop), each on its own fresh copy of the
   topic and its own consumer group.
   **replay**: the same N events as a JSONL file through ``coverwatch replay
   --no-clickhouse`` (subprocess, same settings); ``e2e_vs_replay`` = e2e events/s / replay
   events/s (replay's own timer: read, validate, detect; interpreter start-up excluded).
4. **latency**: a fresh worker, then events produced at a paced 5,000/s with the produce
   wall clock as the event ``ts``; latency = ClickHouse ``events.ingested_at`` (``now64(3)``
   when the worker's insert ran, i.e. after parse, repartition, detection) minus ``ts``, for
   every event. Produce-to-alert latency (alerts topic consumed here) is reported too.
5. **scale out** (provided): one worker, then two workers in one consumer group, each with
   its own ClickHouse; events are produced at full speed once the group is stable; each
   worker's ClickHouse is asked which tenants it saw (disjoint and complete?).

Writes ``--out`` (JSON), the same name with ``.md`` (table with the machine and targets) and
``.png`` (core throughput vs tenants). Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import orjson

from pipeline.bench._worker_proc import REPO, detector_name, embedder_source
from pipeline.settings import Settings
from pipeline.testing.kafka import free_port
from pipeline.testing.worker import WorkerProcess, isolated_settings, topic_partitions

# e2e runs are timed from /metrics answering, so the worker's remaining start-up (group
# joins, ~2-4 s) is inside them: N must take several times that for the rate to describe
# the worker rather than its start (startup_s and first_batch_s are reported beside it).
# A latency run the worker cannot keep up with is cut after ``drain_s`` (its p99 is then a
# lower bound, flagged).
QUICK = {"core_events": 15_000, "scaling_events": 15_000, "e2e_events": 20_000,
         "latency_s": 4, "drain_s": 12, "scale_events": 8_000, "traffic_tenants": 120,
         "traffic_days": 2}
FULL = {"core_events": 200_000, "scaling_events": 100_000, "e2e_events": 60_000,
        "latency_s": 20, "drain_s": 60, "scale_events": 30_000, "traffic_tenants": 400,
        "traffic_days": 7}
SCALING = (1_000, 10_000, 100_000)
TARGETS = {"core_provided": 100_000, "core_text": 20_000, "e2e_provided": 20_000,
           "e2e_vs_bare": 0.5, "p99_ms": 1_000, "bytes_per_tenant": 16_384,
           "scaling_drop": 0.20,
           # issue 17: text >= 20k and >= 0.7 of replay; provided (binary) >= 15k
           "e2e_text": 20_000, "e2e_provided_binary": 15_000, "e2e_vs_replay": 0.7}
MODES = ("provided", "text")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small N, under 5 minutes")
    parser.add_argument("--out", default="bench/results/throughput.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=int, default=5_000, help="events/s for the latency run")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: "
                        "core,bare,e2e,replay,latency,scale,processes (e2e runs the default and the keyed-input "
                        "worker)")
    parser.add_argument("--embedding-encoding", choices=("json", "f16", "f32"), default="json",
                        help="how provided events carry their vector: a JSON list of floats "
                             "(`embedding`, default) or `embedding_b64` (little-endian "
                             "float16 / float32)")
    parser.add_argument("--profile-dir", default=None,
                        help="record py-spy profiles (raw collapsed stacks) of the e2e "
                             "workers here (needs py-spy in the venv)")


def log(msg: str) -> None:
    print(f"[throughput {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- machine ---------------------------------------------------------------------------------

def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    import aiokafka
    import faust
    return {"nproc": os.cpu_count(), "cpu_model": model, "ram_gib": round(ram / 2**30, 1),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform(),
            "aiokafka": aiokafka.__version__, "faust": faust.__version__,
            "detector": detector_name(), "text_embedder": embedder_source()}


# ---- traffic ---------------------------------------------------------------------------------

def encode_embedding(d: dict, encoding: str) -> None:
    """Replace ``d["embedding"]`` (JSON floats) by ``embedding_b64`` of ``encoding``."""
    if encoding == "json" or d.get("embedding") is None:
        return
    import base64

    import numpy as np
    dtype = "<f2" if encoding == "f16" else "<f4"
    d["embedding_b64"] = base64.b64encode(
        np.asarray(d.pop("embedding"), dtype=dtype).tobytes()).decode()


def render(mode: str, n: int, sizes: dict, seed: int, encoding: str = "json"
           ) -> tuple[list[bytes], list[bytes], list[bytes], int]:
    """N realistic messages: (values, keys, value-without-ts-and-event_id, distinct tenants);
    provided vectors as ``encoding`` (see :func:`encode_embedding`)."""
    from pipeline.simulate.traffic import generate
    tr = generate("report", seed=seed, mode=mode, tenants=sizes["traffic_tenants"],
                  days=sizes["traffic_days"])
    values, keys, rests = [], [], []
    tenants = set()
    for d in tr.iter_events(0, n):
        encode_embedding(d, encoding)
        values.append(orjson.dumps(d))
        keys.append(d["tenant_id"].encode())
        tenants.add(d["tenant_id"])
        d.pop("ts")
        d.pop("event_id")
        rests.append(orjson.dumps(d)[1:])   # '"tenant_id":...}' for the latency run
    if len(values) < n:
        raise SystemExit(f"traffic has only {len(values)} events; need {n}")
    return values, keys, rests, len(tenants)


def producer(bootstrap: str):
    from aiokafka import AIOKafkaProducer
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5,
                            max_batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024)


async def _produce_all(bootstrap: str, topic: str, values, keys) -> float:
    p = producer(bootstrap)
    await p.start()
    try:
        t0 = time.perf_counter()
        futs = [await p.send(topic, v, key=k) for v, k in zip(values, keys)]
        await asyncio.gather(*futs)
        return time.perf_counter() - t0
    finally:
        await p.stop()


def produce_all(bootstrap: str, topic: str, values, keys) -> float:
    return asyncio.run(_produce_all(bootstrap, topic, values, keys))


async def _produce_paced(bootstrap: str, topic: str, make, n: int, rate: float) -> dict:
    """Send ``make(i)`` for i < n at ``rate``/s; returns timing facts."""
    p = producer(bootstrap)
    await p.start()
    try:
        loop_t = time.perf_counter
        t0 = loop_t()
        behind = 0.0
        futs = []
        for i in range(n):
            due = t0 + i / rate
            now = loop_t()
            if now < due:
                await asyncio.sleep(due - now)
            else:
                behind = max(behind, now - due)
            key, value = make(i)
            futs.append(await p.send(topic, value, key=key))
        await asyncio.gather(*futs)
        return {"seconds": loop_t() - t0, "max_behind_s": behind}
    finally:
        await p.stop()


def start_broker(cls, attempts: int = 3):
    """A fresh broker; a failed start (half-started JVM) is stopped and retried."""
    for attempt in range(attempts):
        broker = cls()
        try:
            broker.start()
            return broker
        except Exception as exc:  # noqa: BLE001
            log(f"broker start failed ({str(exc).splitlines()[-1][:200]}); retrying")
            try:
                broker.close()
            except Exception:  # noqa: BLE001
                pid = broker.pid
                if pid:
                    os.kill(pid, 9)
            if attempt == attempts - 1:
                raise


def topics_for(broker, work: Path, tag: str, detector: str) -> Settings:
    """Settings of one benchmark phase: its own 4-partition topics and app id (created here)."""
    s = isolated_settings(broker.bootstrap, work / tag, uid=f"bench-{tag}-{uuid.uuid4().hex[:6]}",
                          partitions=4, detector=detector)
    broker.create_topics(topic_partitions(s))
    return s


def bench_worker(s: Settings, work: Path, name: str, keyed: bool = False) -> WorkerProcess:
    """A worker of phase ``s`` with its own ClickHouse, data directory and web port;
    ``keyed``: ``COVERWATCH_INPUT_KEYED=1`` (detect straight from the tenant-keyed input)."""
    own = replace(s, clickhouse_dsn=f"chdb://{work / (name + '-clickhouse')}",
                  data_dir=str(work / (name + "-data")), web_port=free_port())
    env = {"COVERWATCH_INPUT_KEYED": "1"} if keyed else {}
    return WorkerProcess(own, work, name=name, module="pipeline.bench._worker_proc", **env)


# ---- replay (the core path without the streaming shell) --------------------------------------

def replay_run(s: Settings, work: Path, mode: str, values: list[bytes]) -> dict:
    """``coverwatch replay --no-clickhouse`` over the same events as a JSONL file."""
    import re

    from pipeline.testing.worker import settings_env
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"replay-{mode}.jsonl"
    with open(path, "wb") as fh:
        for v in values:
            fh.write(v + b"\n")
    env = {**os.environ, **settings_env(s), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", "--no-clickhouse",
                           str(path)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    load = os.getloadavg()[0]
    path.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"replay failed:\n{proc.stderr[-2000:]}")
    m = re.search(r"replayed ([\d,]+) events .* in ([\d.]+) s; (\d+) alerts", proc.stderr)
    if not m:
        raise RuntimeError(f"replay output not understood:\n{proc.stderr[-2000:]}")
    events, secs = int(m.group(1).replace(",", "")), float(m.group(2))
    out = {"events": len(values), "replayed": events, "seconds": secs,
           "events_per_s": round(len(values) / secs), "wall_s_incl_startup": round(wall, 2),
           "alerts": int(m.group(3)), "loadavg_1m": round(load, 1)}
    log(f"replay {mode}: {out['events_per_s']:,} events/s ({secs:.1f} s; {events:,} events, "
        f"{out['alerts']} alerts)")
    return out


# ---- bare consumer ---------------------------------------------------------------------------

async def _bare(bootstrap: str, topic: str, n: int, partitions: int = 4) -> tuple[float, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 2**20,
                         fetch_max_bytes=64 * 2**20)
    await c.start()
    try:
        c.assign([TopicPartition(topic, p) for p in range(partitions)])
        await c.seek_to_beginning()
        loads = orjson.loads
        got, size = 0, 0
        t0 = time.perf_counter()
        while got < n:
            batches = await c.getmany(timeout_ms=1000, max_records=10_000)
            for msgs in batches.values():
                for m in msgs:
                    loads(m.value)
                    size += len(m.value)
                got += len(msgs)
        return time.perf_counter() - t0, size
    finally:
        await c.stop()


def bare_consumer(bootstrap: str, topic: str, n: int) -> dict:
    cpu0 = time.process_time()
    secs, size = asyncio.run(_bare(bootstrap, topic, n))
    cpu = time.process_time() - cpu0
    return {"events": n, "seconds": round(secs, 2), "events_per_s": round(n / secs),
            "cpu_s": round(cpu, 2), "events_per_cpu_s": round(n / cpu),
            "mb_per_s": round(size / secs / 1e6, 1), "loadavg_1m": round(os.getloadavg()[0], 1)}


# ---- workers ---------------------------------------------------------------------------------

def wait_until(cond, timeout: float, poll: float = 0.2, workers=()) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        for w in workers:
            if not w.alive():
                raise RuntimeError(f"worker {w.name} died:\n{w.tail()}")
        time.sleep(poll)
    return False


def start_profiler(profile_dir, worker: WorkerProcess, name: str):
    if not profile_dir:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        log("py-spy not in the venv; no profile recorded")
        return None
    Path(profile_dir).mkdir(parents=True, exist_ok=True)
    out = Path(profile_dir) / f"{name}.txt"
    return subprocess.Popen([str(spy), "record", "-p", str(worker.pid), "-r", "200", "--threads",
                             "--idle", "--format", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(p) -> None:
    if p is not None and p.poll() is None:
        p.send_signal(2)   # SIGINT: py-spy writes its output and exits
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def e2e(broker, work: Path, mode: str, topics: Settings, n: int, detector: str,
        profile_dir=None, keyed: bool = False) -> dict:
    tag = f"e2e-{mode}" + ("-keyed" if keyed else "")
    w = bench_worker(topics, work / tag, tag, keyed=keyed)
    mode = mode + (" keyed" if keyed else "")
    try:
        w.start()
        startup = w.ready_at - w.launched_at
        prof = start_profiler(profile_dir, w, tag)
        cpu0 = w.cpu_seconds()
        log(f"e2e {mode}: worker ready after {startup:.1f} s; consuming {n:,} pre-loaded events")
        marks: dict[str, float] = {}
        last = [0]

        def done() -> bool:
            d = w.detected()
            now = time.monotonic()
            if d > 0 and "first" not in marks:
                marks["first"] = now
            for frac in (0.1, 0.9):
                if d >= frac * n and f"p{frac}" not in marks:
                    marks[f"p{frac}"] = now
            if d // max(n // 5, 1) > last[0] // max(n // 5, 1):
                log(f"e2e {mode}: {d:,}/{n:,}")
            last[0] = d
            return d >= n
        ok = wait_until(done, timeout=max(300, n / 200), poll=0.1, workers=[w])
        t_end = time.monotonic()
        cpu = w.cpu_seconds() - cpu0
        load = os.getloadavg()[0]
        stop_profiler(prof)
        secs = t_end - w.ready_at
        detected = w.detected()
        rows = w.query("SELECT count(), uniqExact(tenant_id), uniqExact(ingested_at) "
                       "FROM coverwatch.events")[0]
        alerts = w.query("SELECT count() FROM coverwatch.alerts")[0][0]
        m = w.metrics()
        out = {"events": n, "input_keyed": keyed, "completed": ok, "detected": detected,
               "clickhouse_rows": int(rows[0]), "clickhouse_tenants": int(rows[1]),
               # rows of one insert share ingested_at (now64(3) per insert block): ~batches
               "detect_batches_approx": int(rows[2]),
               "mean_batch_events_approx": round(int(rows[0]) / max(int(rows[2]), 1), 1),
               "alerts": int(alerts), "dlq": int(m.get("coverwatch_dlq_total", 0)),
               "startup_s": round(startup, 1),
               "first_batch_s": round(marks.get("first", t_end) - w.ready_at, 2),
               "seconds": round(secs, 2), "events_per_s": round(n / secs),
               "events_per_s_incl_startup": round(n / (t_end - w.launched_at)),
               "worker_cpu_s": round(cpu, 1), "events_per_worker_cpu_s": round(n / cpu)
               if cpu > 0 else None, "worker_cpu_share": round(cpu / secs, 2),
               "loadavg_1m": round(load, 1),
               "steady_events_per_s": round(0.8 * n / (marks["p0.9"] - marks["p0.1"]))
               if "p0.9" in marks and marks["p0.9"] > marks["p0.1"] else None}
        log(f"e2e {mode}: {out['events_per_s']:,} events/s ({secs:.1f} s after ready; "
            f"{out['clickhouse_rows']:,} rows, {out['alerts']} alerts)")
        return out
    finally:
        w.stop()


def _alert_listener(bootstrap: str, topic: str, stop: threading.Event, out: list) -> None:
    from kafka import KafkaConsumer
    from pipeline.contracts.events import parse_ts
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                      auto_offset_reset="earliest")
    try:
        while not stop.is_set():
            for msgs in c.poll(timeout_ms=200).values():
                now = time.time() * 1000
                for m in msgs:
                    a = orjson.loads(m.value)
                    out.append((now, parse_ts(a["ts"]), a["tenant_id"]))
    finally:
        c.close()


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def latency(broker, work: Path, mode: str, rests: list[bytes], keys: list[bytes], rate: int,
            duration: float, detector: str, drain_s: float = 60) -> dict:
    topics = topics_for(broker, work, f"lat-{mode}", detector)
    w = bench_worker(topics, work / f"lat-{mode}", f"lat-{mode}")
    alerts: list = []
    stop = threading.Event()
    listener = threading.Thread(target=_alert_listener, daemon=True,
                                args=(broker.bootstrap, topics.topic_alerts, stop, alerts))
    try:
        w.start()
        run_start_ms = time.time() * 1000
        warm = min(500, len(rests))
        ms = lambda: int(time.time() * 1000)  # noqa: E731
        asyncio.run(_produce_paced(   # warm-up (and partition assignment) before timing
            broker.bootstrap, topics.topic_logs,
            lambda i: (keys[i], b'{"ts":%d,"event_id":"warm-%d",' % (ms(), i) + rests[i]),
            warm, 10_000))
        if not wait_until(lambda: w.detected() >= warm, 120, workers=[w]):
            raise RuntimeError(f"latency warm-up not processed:\n{w.tail()}")
        listener.start()
        total = int(rate * duration)
        log(f"latency {mode}: producing {total:,} events at {rate:,}/s for {duration:.0f} s")
        nrest = len(rests)
        cpu0 = w.cpu_seconds()
        t0 = time.perf_counter()
        facts = asyncio.run(_produce_paced(
            broker.bootstrap, topics.topic_logs,
            lambda i: (keys[i % nrest],
                       b'{"ts":%d,"event_id":"lat-%d",' % (ms(), i) + rests[i % nrest]),
            total, rate))
        produce_s, behind_max = facts["seconds"], facts["max_behind_s"]
        drained = wait_until(lambda: w.detected() >= warm + total,
                             timeout=drain_s, poll=0.2, workers=[w])
        drain_s = time.perf_counter() - t0 - produce_s
        worker_cpu = w.cpu_seconds() - cpu0
        time.sleep(1.0)
        stop.set()
        r = w.query("SELECT count(), quantileExact(0.5)(d), quantileExact(0.99)(d), max(d) FROM "
                    "(SELECT toUnixTimestamp64Milli(ingested_at) - toUnixTimestamp64Milli(ts) AS d "
                    "FROM coverwatch.events WHERE startsWith(event_id, 'lat-'))")[0]
        t_query_ms = time.time() * 1000
        t_produced_ms = (time.time() - (time.perf_counter() - t0 - produce_s)) * 1000
        # produce-to-alert only means something for alerts stamped with an event time of this
        # run (a detector alert carries its triggering event's ts = its produce time); an
        # alert stamped earlier than the run started is counted apart, not as a latency
        alert_lat = [now - ts for now, ts, _ in alerts if ts >= run_start_ms]
        p99, lower_bound = r[2], False
        if int(r[0]) < 0.99 * total:
            # more than 1% never processed: the p99 event is one of them, and every one of
            # them was produced before t_produced and is still waiting at t_query
            p99 = max(p99 or 0, round(t_query_ms - t_produced_ms))
            lower_bound = True
        out = {"rate_target": rate, "duration_s": duration, "events": total,
               "rate_achieved_produce": round(total / produce_s),
               "producer_max_behind_ms": round(1000 * behind_max, 1),
               "processed": int(r[0]), "drained": drained,
               "drain_after_produce_s": round(drain_s, 2),
               "processed_per_s_over_run": round(total / (produce_s + drain_s)),
               "worker_cpu_s": round(worker_cpu, 1),
               "worker_cpu_share": round(worker_cpu / (produce_s + drain_s), 2),
               "loadavg_1m": round(os.getloadavg()[0], 1),
               "p50_ms": r[1], "p99_ms": p99, "p99_is_lower_bound": lower_bound,
               "p99_ms_of_processed": r[2], "max_ms_of_processed": r[3],
               "alerts_received": len(alert_lat),
               "alerts_with_earlier_ts": len(alerts) - len(alert_lat),
               "alert_p50_ms": _pct(alert_lat, 0.5), "alert_p99_ms": _pct(alert_lat, 0.99)}
        log(f"latency {mode}: p50 {r[1]} ms, p99 {'>= ' if lower_bound else ''}{p99} ms "
            f"({r[0]:,}/{total:,} processed); "
            f"{len(alert_lat)} alerts (p99 {out['alert_p99_ms']} ms)")
        return out
    finally:
        stop.set()
        w.stop()


def group_stable(bootstrap: str, group: str, members: int) -> bool:
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-admin")
    try:
        if hasattr(admin, "describe_groups"):          # kafka-python >= 3
            info = admin.describe_groups([group])[group]
            state = info.get("group_state") or info.get("state")
            got = info.get("members") or []
        else:
            g = admin.describe_consumer_groups([group])[0]
            state, got = g.state, g.members
        return state == "Stable" and len(got) == members
    except Exception:  # noqa: BLE001
        return False
    finally:
        admin.close()


def supervised(w: WorkerProcess, k: int) -> list[WorkerProcess]:
    """Handles on the ``k`` children of a ``--processes k`` worker (their web ports), each
    reporting a child's CPU time (children forked in order: ascending pids)."""
    from pipeline.stream.supervisor import child_settings
    pids = sorted(int(p) for p in Path(f"/proc/{w.pid}/task/{w.pid}/children")
                  .read_text().split())
    if len(pids) != k:
        raise RuntimeError(f"expected {k} worker processes, found {pids}:\n{w.tail()}")
    out = []
    for i in range(k):
        h = WorkerProcess(child_settings(w.settings, i), w.log.parent, name=f"{w.name}-p{i}")
        h.proc = _Pid(pids[i])
        out.append(h)
    return out


def ready_children(sup: WorkerProcess) -> int:
    """Children of a supervised worker whose Faust start-up (recovery) finished, as
    :meth:`WorkerProcess.start` waits for it for one worker (log lines carry the pid)."""
    import re
    return len(set(re.findall(r"\[(\d+)\] \[INFO\] \[\^-*Recovery\]: Worker ready",
                              sup.log_since_start())))


class _Pid:
    """Enough of a Popen for a handle on a process another one started."""

    def __init__(self, pid: int):
        self.pid = pid

    def poll(self):
        return None if Path(f"/proc/{self.pid}").exists() else 0


def scale_run(broker, work: Path, k: int, values, keys, detector: str,
              processes: bool = False) -> dict:
    """``k`` workers in one consumer group; ``processes``: one ``coverwatch worker
    --processes k`` (the supervisor's children) instead of ``k`` separate workers."""
    tag = f"procs{k}" if processes else f"scale{k}"
    topics = topics_for(broker, work, tag, detector)
    if processes:
        sup = bench_worker(topics, work / tag, f"{tag}-sup")
        sup.env["COVERWATCH_PROCESSES"] = str(k)
        sup.start(wait_assigned=False)
        ws = supervised(sup, k)
    else:
        sup = None
        ws = [bench_worker(topics, work / tag, f"{tag}-w{i}") for i in range(k)]
    try:
        for w in ws if sup is None else ():
            w.start()
        if not wait_until(lambda: group_stable(broker.bootstrap, topics.app_id, k), 120,
                          poll=1.0, workers=ws):
            raise RuntimeError("consumer group did not become stable")
        if sup is not None and not wait_until(lambda: ready_children(sup) >= k, 120,
                                              poll=1.0, workers=ws):
            raise RuntimeError("worker processes did not finish starting")
        time.sleep(3.0)   # let Faust finish its recovery after the last rebalance
        n = len(values)
        log(f"scale-out {k} worker(s): group stable; producing {n:,} events at full speed")
        cpu0 = [w.cpu_seconds() for w in ws]
        t0 = time.monotonic()
        res: dict = {}
        th = threading.Thread(target=lambda: res.update(
            produce_s=produce_all(broker.bootstrap, topics.topic_logs, values, keys)))
        th.start()
        ok = wait_until(lambda: sum(max(w.detected(), 0) for w in ws) >= n,
                        timeout=max(300, n / 200), poll=0.1, workers=ws)
        secs = time.monotonic() - t0
        cpu = sum(w.cpu_seconds() - c for w, c in zip(ws, cpu0))
        th.join()
        per = [w.detected() for w in ws]
        tenants = [{r[0] for r in w.query("SELECT DISTINCT tenant_id FROM coverwatch.events")}
                   for w in ws]
        overlap = set.intersection(*tenants) if k > 1 else set()
        union = set.union(*tenants)
        out = {"workers": k, "supervised_processes": processes, "events": n, "completed": ok, "seconds": round(secs, 2),
               "events_per_s": round(n / secs), "produce_s": round(res.get("produce_s", 0), 2),
               "workers_cpu_s": round(cpu, 1), "events_per_worker_cpu_s": round(n / cpu)
               if cpu > 0 else None, "loadavg_1m": round(os.getloadavg()[0], 1),
               "events_per_worker": per, "tenants_per_worker": [len(t) for t in tenants],
               "tenants_total": len(union), "tenants_on_two_workers": len(overlap)}
        log(f"scale-out {k} worker(s): {out['events_per_s']:,} events/s, per worker {per}, "
            f"tenants {out['tenants_per_worker']} overlap {len(overlap)}")
        return out
    finally:
        for w in ws if sup is None else (sup,):
            w.stop()


# ---- report ----------------------------------------------------------------------------------

def _fmt(v, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and v < 10:
        return f"{v:.2f}{unit}"
    return f"{v:,.0f}{unit}" if isinstance(v, (int, float)) else f"{v}{unit}"


def _load(xs) -> str:
    return "n/a" if not xs else "/".join(f"{x:.2f}" for x in xs)


def _ok(cond) -> str:
    return "n/a" if cond is None else ("met" if cond else "**not met**")


def markdown(r: dict) -> str:
    m = r["machine"]
    p, t = r.get("provided", {}), r.get("text", {})
    sc = r.get("tenants_scaling") or []
    drop = r.get("scaling_drop_100k_vs_1k")
    lines = [
        f"# Throughput benchmark ({'quick' if r['quick'] else 'full'})", "",
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, {m['ram_gib']} GiB RAM; Python "
        f"{m['python']}, faust-streaming {m['faust']}, aiokafka {m['aiokafka']}; detector "
        f"`{m['detector']}`; text embedder {m['text_embedder']}. Load average "
        f"(1/5/15 min) at start {_load(m.get('loadavg_start'))}, at end "
        f"{_load(m.get('loadavg_end'))}; per phase in the JSON (`loadavg_1m`).",
        f"Provided embeddings travel as {ENCODING_LABEL[r.get('embedding_encoding', 'json')]}.",
        "",
        "| metric | provided embeddings | text only | target | verdict |",
        "|---|---:|---:|---|---|",
    ]

    def row(name, key, target, verdict_p, verdict_t="", unit=""):
        lines.append(f"| {name} | {_fmt(p.get(key), unit)} | {_fmt(t.get(key), unit)} | "
                     f"{target} | {verdict_p}{(' / ' + verdict_t) if verdict_t else ''} |")

    def ge(d, k, x):
        return None if d.get(k) is None else d[k] >= x

    def le(d, k, x):
        return None if d.get(k) is None else d[k] <= x
    row("bare consumer events/s (ceiling)", "bare_consumer_events_per_s", "-", "-")
    binary = r.get("embedding_encoding", "json") != "json"
    row("e2e worker events/s (default: ingest + repartition hop)", "e2e_events_per_s",
        ">= 15,000 provided (binary) / >= 20,000 text" if binary
        else ">= 20,000 provided / >= 20,000 text",
        _ok(ge(p, "e2e_events_per_s", TARGETS["e2e_provided_binary" if binary
                                               else "e2e_provided"])),
        _ok(ge(t, "e2e_events_per_s", TARGETS["e2e_text"])))
    row("e2e / bare", "e2e_vs_bare", ">= 0.5", _ok(ge(p, "e2e_vs_bare", 0.5)),
        _ok(ge(t, "e2e_vs_bare", 0.5)))
    row("e2e worker events/s, keyed input (no repartition hop)", "e2e_keyed_events_per_s",
        ">= 15,000 provided (binary) / >= 20,000 text",
        _ok(ge(p, "e2e_keyed_events_per_s", TARGETS["e2e_provided_binary"]))
        + (" (JSON floats; the target is for binary)" if p.get("e2e_keyed_events_per_s")
           is not None and r.get("embedding_encoding", "json") == "json" else ""),
        _ok(ge(t, "e2e_keyed_events_per_s", TARGETS["e2e_text"])))
    row("`replay --no-clickhouse` events/s (same events)", "replay_events_per_s", "-", "-")
    row("e2e / replay", "e2e_vs_replay", ">= 0.7 text", "-",
        _ok(ge(t, "e2e_vs_replay", TARGETS["e2e_vs_replay"])))
    row("e2e keyed / replay", "e2e_keyed_vs_replay", ">= 0.7 text", "-",
        _ok(ge(t, "e2e_keyed_vs_replay", TARGETS["e2e_vs_replay"])))
    row("core events/s (1 core)", "core_events_per_s", ">= 100,000 provided / >= 20,000 text",
        _ok(ge(p, "core_events_per_s", TARGETS["core_provided"])),
        _ok(ge(t, "core_events_per_s", TARGETS["core_text"])))
    row(f"p99 latency ms at {r.get('latency_rate', 5000):,}/s (>= : lower bound, backlog)",
        "p99_latency_ms", "<= 1,000",
        _ok(le(p, "p99_latency_ms", 1000)), _ok(le(t, "p99_latency_ms", 1000)))
    if p.get("p99_latency_is_lower_bound") or t.get("p99_latency_is_lower_bound"):
        lines[-1] = lines[-1].replace(f"| {_fmt(p.get('p99_latency_ms'))} |",
                                      f"| >= {_fmt(p.get('p99_latency_ms'))} |"
                                      if p.get("p99_latency_is_lower_bound") else
                                      f"| {_fmt(p.get('p99_latency_ms'))} |", 1)
        if t.get("p99_latency_is_lower_bound"):
            lines[-1] = lines[-1].replace(f"| {_fmt(t.get('p99_latency_ms'))} |",
                                          f"| >= {_fmt(t.get('p99_latency_ms'))} |", 1)
    bpt = r.get("bytes_per_tenant")
    lines.append(f"| bytes per tenant (100k tenants) | {_fmt(bpt)} | | <= 16,384 | "
                 f"{_ok(None if bpt is None else bpt <= TARGETS['bytes_per_tenant'])} |")
    lines.append(f"| core events/s at 100k vs 1k tenants | "
                 f"{'n/a' if drop is None else f'{drop * 100:+.1f}%'} | | within 20% | "
                 f"{_ok(None if drop is None else abs(drop) <= 0.2)} |")
    so = r.get("scale_out") or {}
    if so:
        lines.append(f"| scale-out: 2 workers vs 1 (events/s) | {_fmt(so.get('two_workers_events_per_s'))} "
                     f"vs {_fmt(so.get('one_worker_events_per_s'))} | | more than one, "
                     f"tenants on one worker | "
                     f"{_ok(so.get('speedup', 0) > 1 and so.get('disjoint') and so.get('complete'))} |")
        if so.get("two_processes_events_per_s"):
            lines.append(f"| `worker --processes 2` vs 1 worker (events/s) | "
                         f"{_fmt(so['two_processes_events_per_s'])} vs "
                         f"{_fmt(so.get('one_worker_events_per_s'))} | | more than one | "
                         f"{_ok(so.get('processes_speedup', 0) > 1)} |")
    lines += ["", "Tenants scaling (core, provided, one core):", "",
              "| tenants | events/s | heap B/tenant | dumped B/tenant |", "|---:|---:|---:|---:|"]
    for s in sc:
        lines.append(f"| {s['tenants']:,} | {s['core_events_per_s']:,} | "
                     f"{_fmt(s.get('heap_bytes_per_tenant'))} | {_fmt(s.get('dump_bytes_per_tenant'))} |")
    lines += ["", "Method notes:", ""]
    lines += [f"- {k}: {v}" for k, v in r.get("notes", {}).items()]
    cmd = r.get("command") or (f"coverwatch bench throughput{' --quick' if r['quick'] else ''} "
                               f"--out {r['out']}")
    lines += ["", f"Command: `{cmd}`; {r['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    sc = r.get("tenants_scaling") or []
    if not sc:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [s["tenants"] for s in sc]
    ax.plot(xs, [s["core_events_per_s"] for s in sc], "o-", label="core, provided (1 core)")
    ax.axhline(TARGETS["core_provided"], color="grey", ls="--", lw=1, label="target 100k/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tracked tenants")
    ax.set_ylabel("events/s")
    ax.set_title(f"coverwatch core throughput vs tenants ({r['machine']['nproc']} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


NOTES = {
    "bare_consumer": "aiokafka consumer (no group, 4 partitions assigned, 8 MiB partition "
                     "fetches), orjson.loads of every message, nothing else; same topic the "
                     "worker then consumes.",
    "e2e": "coverwatch worker subprocess started on the pre-loaded topic; events/s = N / (time "
           "from /metrics answering to coverwatch_events_detected_total == N); nothing else "
           "subtracted; startup_s (launch to /metrics) reported separately. The counter "
           "advances after the batch's ClickHouse insert returned and its alerts were sent; "
           "rows are counted in ClickHouse afterwards.",
    "core": "pipeline.process.Processor on pre-parsed events (parsing not timed), batches of "
            "5,000, pinned to CPU 0 (taskset -c 0); text mode includes embedding. "
            "core_events_per_s = events per CPU-second of that process (one core's worth, "
            "robust to other load on the machine); core_events_per_s_wall beside it.",
    "contention": "loadavg_1m is recorded per phase: on a shared 2-core machine other "
                  "processes take CPU from the worker; *_per_worker_cpu_s rates divide by the "
                  "worker's own CPU seconds (all threads) instead of wall time.",
    "latency": "events produced at a paced rate with ts = produce wall clock (ms); latency = "
               "ClickHouse events.ingested_at (now64(3) at the worker's insert, i.e. after "
               "ingest, repartition, detection) - ts, over every event; alerts are sent right "
               "after that insert, so produce-to-alert is the same plus the send "
               "(alert_p99_ms: alerts consumed from the alerts topic, receive time - ts of the "
               "triggering event; alerts stamped before the run are counted in "
               "alerts_with_earlier_ts instead). When the worker cannot sustain the rate, the backlog "
               "grows and the p99 says so.",
    "e2e_keyed": "as e2e, with COVERWATCH_INPUT_KEYED=1 (the input topic is keyed by tenant, "
                 "so the worker detects straight from it: no ingest stage, no repartition "
                 "topic); its own fresh copy of the same events, its own consumer group.",
    "replay": "the same N events written as JSONL and run through `coverwatch replay "
              "--no-clickhouse` (subprocess, same detector settings, batches of 5,000, not "
              "pinned); events/s from replay's own timer (read + validate + detect), "
              "interpreter start-up excluded. e2e_vs_replay = e2e events/s / replay events/s "
              "(e2e_keyed_vs_replay for the keyed mode): what the streaming shell costs over "
              "the core path.",
    "bytes_per_tenant": "100k tenants restored from realistic states; each state dumped and "
                        "loaded into a fresh detector under tracemalloc (heap) and len(dump_tenant).",
    "tenants_scaling": "each K starts from the same mix of realistic warm states (restore not "
                       "timed); the same realistic events (sizes.scaling_events) are spread uniformly over K "
                       "tenants and timed.",
    "scale_out": "4-partition topics, workers in one consumer group, each with its own "
                 "embedded ClickHouse; events produced at full speed after the group is stable "
                 "(producer on the same 2 cores); tenant sets read back from each worker's "
                 "ClickHouse. `processes`: the same with one `coverwatch worker --processes 2` "
                 "(supervisor and two forked children) instead of two workers.",
}


ENCODING_NOTE = {
    "json": "provided rows carry the embedding as a JSON list of 384 floats (`embedding`); "
            "the binary `embedding_b64` is measured with --embedding-encoding f16/f32.",
    "f16": "provided rows carry the embedding as `embedding_b64`: base64 of 384 little-endian "
           "float16 (768 bytes); core rows are unaffected (pre-parsed events).",
    "f32": "provided rows carry the embedding as `embedding_b64`: base64 of 384 little-endian "
           "float32 (1,536 bytes); core rows are unaffected (pre-parsed events).",
}
ENCODING_LABEL = {"json": "JSON float lists (`embedding`, 384 floats), not `embedding_b64`",
                  "f16": "`embedding_b64`, little-endian float16",
                  "f32": "`embedding_b64`, little-endian float32"}


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run."""
    parts = ["coverwatch bench throughput"] + (["--quick"] if args.quick else [])
    if args.embedding_encoding != "json":
        parts.append(f"--embedding-encoding {args.embedding_encoding}")
    if args.skip:
        parts.append(f"--skip {args.skip}")
    if args.rate != 5_000:
        parts.append(f"--rate {args.rate}")
    if args.seed:
        parts.append(f"--seed {args.seed}")
    return " ".join(parts + [f"--out {args.out}"])


def run(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    sizes = QUICK if args.quick else FULL
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    r: dict = {"quick": bool(args.quick), "out": str(args.out), "machine": machine(),
               "sizes": sizes, "latency_rate": args.rate, "provided": {}, "text": {},
               "embedding_encoding": args.embedding_encoding, "command": command(args),
               "notes": {**NOTES, "encoding": ENCODING_NOTE[args.embedding_encoding]}}
    detector = r["machine"]["detector"]
    log(f"machine: {r['machine']['nproc']} cores, {r['machine']['cpu_model']}; "
        f"detector {detector}")

    # 1. core, pinned to one CPU, before any Kafka process competes for it
    if "core" not in skip:
        cfg = {"n": sizes["core_events"], "seed": args.seed,
               "traffic_tenants": sizes["traffic_tenants"], "traffic_days": sizes["traffic_days"],
               "scaling": list(SCALING), "scaling_events": sizes["scaling_events"]}
        log("core: detector alone on CPU 0 (subprocess)")
        cmd = [sys.executable, "-m", "pipeline.bench._core", orjson.dumps(cfg).decode()]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", "0"] + cmd
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "OPENBLAS_NUM_THREADS": "1",
                                   "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise SystemExit("core benchmark failed")
        core = orjson.loads(proc.stdout.strip().splitlines()[-1])
        r["core"] = core
        for mode in MODES:
            if mode in core["modes"]:
                r[mode]["core_events_per_s"] = core["modes"][mode]["core_events_per_s"]
        r["tenants_scaling"] = core["tenants_scaling"]
        by_k = {s["tenants"]: s for s in core["tenants_scaling"]}
        if 100_000 in by_k:
            r["bytes_per_tenant"] = by_k[100_000]["heap_bytes_per_tenant"]
            r["dump_bytes_per_tenant"] = by_k[100_000]["dump_bytes_per_tenant"]
        if 1_000 in by_k and 100_000 in by_k:
            r["scaling_drop_100k_vs_1k"] = round(
                by_k[100_000]["core_events_per_s"] / by_k[1_000]["core_events_per_s"] - 1, 3)

    kafka_parts = {"bare", "e2e", "latency", "scale"} - skip
    if kafka_parts:
        from pipeline.testing.kafka import KafkaBroker
        work = Path(tempfile.mkdtemp(prefix="coverwatch-bench-"))
        log("starting a Kafka broker")
        broker = start_broker(KafkaBroker)
        try:
            for mode in MODES:
                n = sizes["e2e_events"]
                log(f"{mode}: rendering {n:,} realistic events")
                values, keys, rests, n_tenants = render(mode, n, sizes, args.seed,
                                                        args.embedding_encoding)
                r[mode]["message_bytes_mean"] = round(sum(map(len, values)) / n)
                r[mode]["tenants_in_topic"] = n_tenants
                if {"bare", "e2e"} & kafka_parts:
                    topics = topics_for(broker, work, f"e2e-{mode}", detector)
                    secs = produce_all(broker.bootstrap, topics.topic_logs, values, keys)
                    log(f"{mode}: pre-loaded {n:,} events in {secs:.1f} s "
                        f"({r[mode]['message_bytes_mean']:,} B each)")
                    if "bare" in kafka_parts:
                        b = bare_consumer(broker.bootstrap, topics.topic_logs, n)
                        r[mode]["bare"] = b
                        r[mode]["bare_consumer_events_per_s"] = b["events_per_s"]
                        log(f"{mode}: bare consumer {b['events_per_s']:,} events/s")
                    if "e2e" in kafka_parts:
                        e = e2e(broker, work, mode, topics, n, detector, args.profile_dir)
                        r[mode]["e2e"] = e
                        r[mode]["e2e_events_per_s"] = e["events_per_s"]
                        keyed_topics = topics_for(broker, work, f"e2e-{mode}-keyed", detector)
                        produce_all(broker.bootstrap, keyed_topics.topic_logs, values, keys)
                        ek = e2e(broker, work, mode, keyed_topics, n, detector,
                                 args.profile_dir, keyed=True)
                        r[mode]["e2e_keyed"] = ek
                        r[mode]["e2e_keyed_events_per_s"] = ek["events_per_s"]
                    if "replay" not in skip:
                        rp = replay_run(topics, work / f"replay-{mode}", mode, values)
                        r[mode]["replay"] = rp
                        r[mode]["replay_events_per_s"] = rp["events_per_s"]
                        for k in ("e2e", "e2e_keyed"):
                            if f"{k}_events_per_s" in r[mode]:
                                r[mode][f"{k}_vs_replay"] = round(
                                    r[mode][f"{k}_events_per_s"] / rp["events_per_s"], 3)
                    if "bare_consumer_events_per_s" in r[mode] and "e2e_events_per_s" in r[mode]:
                        r[mode]["e2e_vs_bare"] = round(r[mode]["e2e_events_per_s"]
                                                       / r[mode]["bare_consumer_events_per_s"], 3)
                if "latency" in kafka_parts:
                    lat = latency(broker, work, mode, rests, keys, args.rate,
                                  sizes["latency_s"], detector, sizes["drain_s"])
                    r[mode]["latency"] = lat
                    r[mode]["p99_latency_ms"] = lat["p99_ms"]
                    r[mode]["p99_latency_is_lower_bound"] = lat["p99_is_lower_bound"]
                if "scale" in kafka_parts and mode == "provided":
                    k = min(sizes["scale_events"], n)
                    one = scale_run(broker, work, 1, values[:k], keys[:k], detector)
                    two = scale_run(broker, work, 2, values[:k], keys[:k], detector)
                    r["scale_out"] = {
                        "one": one, "two": two,
                        "one_worker_events_per_s": one["events_per_s"],
                        "two_workers_events_per_s": two["events_per_s"],
                        "speedup": round(two["events_per_s"] / one["events_per_s"], 2),
                        "disjoint": two["tenants_on_two_workers"] == 0,
                        "complete": two["tenants_total"] == one["tenants_total"]
                        and two["completed"]}
                    if "processes" not in skip:   # coverwatch worker --processes 2
                        procs = scale_run(broker, work, 2, values[:k], keys[:k], detector,
                                          processes=True)
                        r["scale_out"].update(
                            two_processes=procs,
                            two_processes_events_per_s=procs["events_per_s"],
                            processes_speedup=round(procs["events_per_s"]
                                                    / one["events_per_s"], 2))
                del values, keys, rests
        finally:
            broker.stop()
            shutil.rmtree(broker.data_dir, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)

    r["seconds"] = round(time.monotonic() - t_start, 1)
    r["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out.write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))
    md = markdown(r)
    out.with_suffix(".md").write_text(md)
    plot(r, out.with_suffix(".png"))
    print(md)
    log(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')} in {r['seconds']:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="coverwatch bench throughput")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
