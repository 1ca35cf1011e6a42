"""``coverwatch worker`` in a subprocess, for the tests and the throughput benchmark alike.

Each worker gets its own topics, app id, embedded ClickHouse directory, data directory and
web port (:func:`isolated_settings`), passed through the environment exactly as a deployment
configures one. The handle reads ``/metrics``, runs read-only queries through ``/query``,
reports the process's CPU time, and stops it with any signal (SIGKILL for fault tests).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import orjson

from pipeline import web_tls
from pipeline.settings import REPO_ROOT, Settings
from pipeline.testing.kafka import free_port


def status_kb(pid: int, field: str = "VmRSS") -> int:
    """One ``/proc/<pid>/status`` figure in kB (``VmRSS``, ``VmHWM``...); 0 once the
    process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def isolated_settings(bootstrap: str, workdir: Path, *, uid: str | None = None,
                      **overrides) -> Settings:
    """Settings with topic names, app id, ClickHouse and data directory of their own."""
    uid = uid or uuid.uuid4().hex[:8]
    base = dict(kafka_bootstrap=bootstrap, clickhouse_dsn=f"chdb://{workdir / 'clickhouse'}",
                topic_logs=f"logs-{uid}", topic_dlq=f"dlq-{uid}", topic_alerts=f"alerts-{uid}",
                topic_events=f"events-{uid}", topic_summaries=f"summaries-{uid}",
                topic_checkpoints=f"checkpoints-{uid}",
                app_id=f"cw-{uid}", data_dir=str(workdir / "worker"), web_port=free_port())
    return Settings(**{**base, **overrides})


def topic_partitions(s: Settings) -> dict[str, int]:
    """The topics a worker with these settings expects to exist, with partition counts."""
    return {s.topic_logs: s.partitions, s.topic_dlq: 1, s.topic_alerts: 1,
            s.topic_events: s.partitions, s.topic_summaries: 1}


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that makes ``Settings.from_env`` return ``s`` (fields tests vary)."""
    return {"KAFKA_BOOTSTRAP": s.kafka_bootstrap, "CLICKHOUSE_DSN": s.clickhouse_dsn,
            "TOPIC_API_LOGS": s.topic_logs, "TOPIC_DLQ": s.topic_dlq,
            "TOPIC_ALERTS": s.topic_alerts, "TOPIC_EVENTS": s.topic_events,
            "TOPIC_SUMMARIES": s.topic_summaries, "TOPIC_PARTITIONS": str(s.partitions),
            "TOPIC_CHECKPOINTS": s.topic_checkpoints,
            "COVERWATCH_APP_ID": s.app_id, "COVERWATCH_DATA_DIR": s.data_dir,
            "COVERWATCH_WEB_PORT": str(s.web_port), "COVERWATCH_DETECTOR": s.detector}


class WorkerProcess:
    """One worker subprocess; ``env`` overrides the settings' environment (e.g. the detector).

    ``module`` is what runs as ``python -m module worker``: the CLI by default, or the
    benchmark's wrapper that installs its fallbacks first.
    """

    def __init__(self, settings: Settings, workdir: Path, *, name: str = "worker",
                 module: str = "pipeline.cli", **env: str):
        workdir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.name = name
        self.module = module
        self.env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1", **env}
        # the web port as the worker serves it (TLS when the environment gives a certificate)
        self._web = replace(settings, web_tls_cert=self.env.get("COVERWATCH_WEB_TLS_CERT", ""),
                            web_tls_key=self.env.get("COVERWATCH_WEB_TLS_KEY", ""))
        self.log = workdir / f"{name}-{settings.app_id}.log"
        self.proc: subprocess.Popen | None = None
        self.launched_at = 0.0
        self.ready_at = 0.0

    @property
    def url(self) -> str:
        return web_tls.local_url(self._web)

    def open(self, req, timeout: float):
        """``urlopen`` of this worker's web port (over TLS as ``coverwatch query`` opens it)."""
        return urllib.request.urlopen(req, timeout=timeout,
                                      context=web_tls.client_context(self._web))

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def start(self, timeout: float = 120, wait_assigned: bool = True) -> WorkerProcess:
        """Launch; return once ``/metrics`` answers and (``wait_assigned``) this process's
        consumers have joined both consumer groups and been assigned partitions.

        A restarted worker answers ``/metrics`` seconds before its consumers join (after a
        SIGKILL, the dead member's session must expire first), so a check made right after
        ``start()`` would otherwise run before anything was re-delivered or restored.
        """
        before = self.group_members() if wait_assigned else {}
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        fh = open(self.log, "ab")
        self.launched_at = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, "worker"],
                                     cwd=REPO_ROOT, env=self.env, stdout=fh, stderr=fh)
        deadline = time.monotonic() + timeout
        answered = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.tail()}")
            try:
                if not answered:
                    self.metrics()
                    answered = True
                if not wait_assigned or self._assigned(before):
                    self.ready_at = time.monotonic()
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker {self.name} not ready (consumers not assigned):\n"
                           f"{self.group_members()}\n{self.tail()}")

    def groups(self) -> dict[str, str]:
        """Consumer group -> the input topic it must cover: detect agent and ingest stage."""
        s = self.settings
        if self.env.get("COVERWATCH_INPUT_KEYED") == "1":
            # no repartition hop: the Faust group covers the table, whose active
            # partitions the keyed source reads (manual assignment, no group of its own)
            from pipeline.stream.keyed import changelog_topic
            return {s.app_id: changelog_topic(s)}
        return {s.app_id: s.topic_events, f"{s.app_id}-ingest": s.topic_logs}

    def group_members(self) -> dict[str, dict]:
        """Per consumer group: state and member id -> partitions of its input topic (admin
        client's DescribeGroups; {} when the broker does not answer)."""
        import logging

        from kafka.admin import KafkaAdminClient
        # Faust's member metadata is not kafka-python's format: it warns on every describe
        logging.getLogger("kafka.admin._groups").setLevel(logging.ERROR)
        out: dict[str, dict] = {}
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap,
                                     client_id="coverwatch-test-groups",
                                     request_timeout_ms=5000)
        except Exception:  # noqa: BLE001 - broker down: no group is known
            return out
        try:
            described = admin.describe_groups(list(self.groups()))
            for group, topic in self.groups().items():
                g = described.get(group) or {}
                members = {}
                for m in g.get("members") or []:
                    parts = [p for a in (m.get("member_assignment") or {}).get(
                        "assigned_partitions") or [] if a["topic"] == topic
                        for p in a["partitions"]]
                    members[m["member_id"]] = sorted(parts)
                out[group] = {"state": g.get("group_state"), "members": members}
        except Exception:  # noqa: BLE001 - coordinator not there yet: nothing assigned
            pass
        finally:
            admin.close()
        return out

    def _assigned(self, before: dict[str, dict]) -> bool:
        """Both groups stable, each with a member that joined after launch, every partition
        of their input topic assigned, and Faust's recovery finished in this process."""
        now = self.group_members()
        for group in self.groups():
            g = now.get(group) or {}
            old = set((before.get(group) or {}).get("members") or {})
            members = g.get("members") or {}
            if g.get("state") != "Stable" or not set(members) - old:
                return False
            covered = {p for parts in members.values() for p in parts}
            if covered != set(range(self.settings.partitions)):
                return False
        return "Worker ready" in self.log_since_start()

    def log_since_start(self) -> str:
        """This process's part of the log file (earlier runs append to the same file)."""
        try:
            with open(self.log, "rb") as fh:
                fh.seek(getattr(self, "_log_offset", 0))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def metrics(self) -> dict[str, float]:
        body = self.open(f"{self.url}/metrics", timeout=5).read().decode()
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def detected(self) -> int:
        """``coverwatch_events_detected_total``, or -1 while the worker does not answer."""
        try:
            return int(self.metrics().get("coverwatch_events_detected_total", 0))
        except OSError:
            return -1

    def wait_for(self, cond, timeout: float = 120, what: str = "condition") -> None:
        """Poll ``cond(metrics)`` until true; fail early if the worker exits."""
        def met() -> bool:
            try:
                return cond(self.metrics())
            except OSError:
                return False
        self._poll(met, timeout, what, 0.5, lambda: f"metrics={self.metrics()}")

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        """Until ``text`` appears in this process's log: lines logged just after the
        group settles (the keyed reader's assignment) race a plain read."""
        self._poll(lambda: text in self.log_since_start(), timeout, f"log line {text!r}", 0.2)

    def _poll(self, cond, timeout: float, what: str, every: float, detail=lambda: "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.tail()}")
            time.sleep(every)
        raise TimeoutError(f"{what} not reached; {detail()}\n{self.tail()}")

    def query(self, sql: str, timeout: float = 60) -> list[list]:
        """Rows of a read-only query through the worker's ``/query`` endpoint."""
        req = urllib.request.Request(f"{self.url}/query", data=orjson.dumps({"sql": sql}),
                                     headers={"Content-Type": "application/json"})
        body = orjson.loads(self.open(req, timeout=timeout).read())
        if "error" in body:
            raise RuntimeError(body["error"])
        return body["rows"]

    def cpu_seconds(self) -> float:
        """User + system CPU of the worker process (all its threads) so far."""
        try:
            f = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
