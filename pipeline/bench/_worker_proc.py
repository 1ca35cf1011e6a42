"""Benchmark helpers shared by ``bench throughput`` and its subprocesses.

- :func:`text_embedder` / :func:`detector`: the production factories of
  :mod:`pipeline.process`, with a fallback while ``pipeline.embed.get_embedder`` (or the
  coverwatch detector) is still being written, so the benchmark measures what exists.
- ``python -m pipeline.bench._worker_proc``: ``coverwatch worker`` exactly as the CLI runs
  it (same Settings from the environment, same app), after installing those fallbacks.
- :class:`Worker`: one such worker in a subprocess with its own topics, app id, embedded
  ClickHouse directory and web port (the approach of ``tests/conftest.py``).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]


# ---- factories with fallbacks --------------------------------------------------------------

def embedder_source() -> str:
    try:
        from pipeline.embed import get_embedder  # noqa: F401
        return "pipeline.embed.get_embedder('hashing')"
    except ImportError:
        return "pipeline.embed.hashing.HashingEmbedder (get_embedder not available yet)"


def text_embedder(dim: int = 384):
    try:
        from pipeline.embed import get_embedder
        return get_embedder("hashing", dim=dim)
    except ImportError:
        from pipeline.embed.hashing import HashingEmbedder
        return HashingEmbedder(dim=dim)


def detector_name() -> str:
    try:
        from pipeline.process import make_detector
        make_detector("coverwatch")
        return "coverwatch"
    except Exception:  # noqa: BLE001 - being tuned elsewhere; fall back to the simple one
        return "burst"


def install_fallbacks() -> None:
    """Make ``make_embedder('hashing')`` work even before ``pipeline.embed`` exports it."""
    import pipeline.process as process
    orig = process.make_embedder

    def make_embedder(name: str, dim: int):
        if name == "hashing":
            return text_embedder(dim)
        return orig(name, dim)
    process.make_embedder = make_embedder


# ---- a worker in a subprocess --------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """``coverwatch worker`` in a subprocess; ``env`` is its configuration."""

    def __init__(self, bootstrap: str, workdir: Path, *, topic_logs: str, topic_events: str,
                 topic_alerts: str, topic_dlq: str, app_id: str, detector: str,
                 name: str = "w0", extra_env: dict | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.log = workdir / f"{name}.log"
        self.env = {**os.environ,
                    "KAFKA_BOOTSTRAP": bootstrap,
                    "CLICKHOUSE_DSN": f"chdb://{workdir / (name + '-clickhouse')}",
                    "TOPIC_API_LOGS": topic_logs, "TOPIC_DLQ": topic_dlq,
                    "TOPIC_ALERTS": topic_alerts, "TOPIC_EVENTS": topic_events,
                    "COVERWATCH_APP_ID": app_id,
                    "COVERWATCH_DATA_DIR": str(workdir / (name + "-data")),
                    "COVERWATCH_WEB_PORT": str(self.port),
                    "COVERWATCH_DETECTOR": detector,
                    "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        self.proc: subprocess.Popen | None = None
        self.launched_at = 0.0
        self.ready_at = 0.0

    def start(self, timeout: float = 120) -> Worker:
        fh = open(self.log, "ab")
        self.launched_at = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.bench._worker_proc"],
                                     cwd=REPO, env=self.env, stdout=fh, stderr=fh)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.tail()}")
            try:
                self.metrics()
                self.ready_at = time.monotonic()
                return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"worker {self.name} not ready:\n{self.tail()}")

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def metrics(self) -> dict[str, float]:
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                      timeout=5).read().decode()
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def detected(self) -> int:
        try:
            return int(self.metrics().get("coverwatch_events_detected_total", 0))
        except OSError:
            return -1

    def query(self, sql: str) -> list[list]:
        url = f"http://127.0.0.1:{self.port}/query?" + urllib.parse.urlencode({"sql": sql})
        body = orjson.loads(urllib.request.urlopen(url, timeout=60).read())
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

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def main() -> int:
    install_fallbacks()
    from pipeline.cli import main as cli_main
    return cli_main(["worker", "--loglevel", os.environ.get("COVERWATCH_LOGLEVEL", "info")])


if __name__ == "__main__":
    sys.exit(main())
