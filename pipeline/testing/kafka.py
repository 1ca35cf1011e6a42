"""A real single-node Kafka 4.x broker for tests, driven through ``infra/kafka.sh``.

The broker runs from the Maven Central jars (fetched once into ``infra/kafka/.cache/lib``)
on two free local ports with its own temporary data directory. Usage::

    from pipeline.testing.kafka import KafkaBroker
    with KafkaBroker() as broker:                  # start(): free ports, temp dir, waits ready
        broker.create_topics({"api-logs": 4, "alerts": 1})
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        broker.kill(); broker.restart()            # fault injection: SIGKILL, same ports/data

``stop()`` keeps the data directory (so ``start()``/``restart()`` resume the same log);
``close()`` (and leaving the ``with`` block) stops and deletes a temporary data directory.
A broker still running when the interpreter exits is stopped by an ``atexit`` hook.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO_ROOT / "infra" / "kafka.sh"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KafkaBroker:
    """One Kafka broker+controller (KRaft) process on 127.0.0.1.

    ``port``/``controller_port`` default to free ports picked at ``start()``; ``data_dir``
    defaults to a fresh temporary directory that ``close()`` removes. ``fast_start`` runs
    the JVM with the C1 JIT only (quicker start, lower peak throughput; fine for tests).
    ``sasl`` starts it as ``make run`` does: clients must log in (:attr:`credentials`).
    """

    def __init__(self, port: int | None = None, controller_port: int | None = None,
                 data_dir: str | os.PathLike | None = None, timeout: float = 120,
                 script: str | os.PathLike = KAFKA_SH, fast_start: bool = True,
                 sasl: bool = False):
        self.port = port
        self.controller_port = controller_port
        self._fixed_ports = port is not None
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.timeout = timeout
        self.script = Path(script)
        self.fast_start = fast_start
        self.sasl = sasl
        self._atexit_registered = False

    # ------------------------------------------------------------------ info
    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("broker not started")
        return f"127.0.0.1:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        """The ``KAFKA_*`` settings a client of this broker needs (``infra/kafka.sh env``)."""
        out = self._run("env", "--data", str(self.data_dir))
        return dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())

    @property
    def pid(self) -> int | None:
        """Pid of the broker JVM if it is alive, else None."""
        if self.data_dir is None:
            return None
        try:
            pid = int((self.data_dir / "kafka.pid").read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    @property
    def log_file(self) -> Path | None:
        return self.data_dir / "logs" / "server.log" if self.data_dir else None

    def is_running(self) -> bool:
        return self.pid is not None

    # ------------------------------------------------------------------ lifecycle
    def _run(self, *args: str, timeout: float | None = None) -> str:
        env = {**os.environ, "PYTHON": sys.executable}
        if self.fast_start:  # C1-only JIT: about twice as fast a start on 2 busy cores
            env.setdefault("KAFKA_FAST_START", "1")
        proc = subprocess.run(["bash", str(self.script), *args], cwd=REPO_ROOT, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout or self.timeout + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"infra/kafka.sh {' '.join(args)} failed "
                               f"(exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def start(self) -> str:
        """Start (or find already running) and wait until it serves clients; returns bootstrap."""
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="coverwatch-kafka-"))
        attempts = 1 if self._fixed_ports else 3
        for attempt in range(attempts):
            if self.port is None or (attempt > 0 and not self._fixed_ports):
                self.port, self.controller_port = free_port(), free_port()
                while self.controller_port == self.port:
                    self.controller_port = free_port()
            if self.controller_port is None:
                self.controller_port = free_port()
            try:
                self._run("start", "--port", str(self.port),
                          "--controller-port", str(self.controller_port),
                          "--data", str(self.data_dir), *(["--sasl"] if self.sasl else []),
                          timeout=self.timeout + 600)  # first start may fetch the jars
                break
            except RuntimeError as exc:
                if "already in use" not in str(exc) or attempt == attempts - 1:
                    raise
        if not self._atexit_registered:
            atexit.register(self._atexit)
            self._atexit_registered = True
        return self.bootstrap

    def stop(self) -> None:
        """Graceful stop (SIGTERM, SIGKILL after 30 s). Keeps the data directory."""
        if self.data_dir is not None and self.data_dir.exists():
            self._run("stop", "--data", str(self.data_dir), timeout=180)

    def kill(self) -> None:
        """SIGKILL the broker (crash simulation) and wait until it is gone."""
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        (self.data_dir / "kafka.pid").unlink(missing_ok=True)

    def restart(self) -> str:
        """Stop if running, then start again on the same ports and data directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and delete the data directory if this object created it."""
        try:
            self.stop()
        finally:
            if self._owns_dir and self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def _atexit(self) -> None:
        try:
            if self.is_running():
                self.stop()
            if self._owns_dir and self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)
        except Exception:  # never fail interpreter shutdown
            pass

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ topics
    def create_topics(self, names: dict[str, int], timeout: float = 30) -> None:
        """Create topics (name -> partitions, replication 1) if missing; wait for leaders."""
        try:
            import kafka
            from kafka.admin import KafkaAdminClient, NewTopic
            from kafka.errors import TopicAlreadyExistsError
        except ImportError:  # no kafka-python: let the script do it (TopicCommand)
            self._run("topics", "--port", str(self.port),
                      *[f"{n}:{p}" for n, p in names.items()])
            return
        modern = int(kafka.__version__.split(".")[0]) >= 3   # dict input; NewTopic deprecated
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                 client_id="coverwatch-test-admin")
        try:
            existing = set(admin.list_topics())
            for name, partitions in names.items():
                if name in existing:
                    continue
                try:
                    if modern:
                        admin.create_topics({name: {"num_partitions": partitions,
                                                    "replication_factor": 1}})
                    else:
                        admin.create_topics([NewTopic(name=name, num_partitions=partitions,
                                                      replication_factor=1)])
                except TopicAlreadyExistsError:
                    pass
            self._wait_leaders(admin, list(names), timeout)
        finally:
            admin.close()

    @staticmethod
    def _wait_leaders(admin, topics: list[str], timeout: float) -> None:
        def ready(t: dict) -> bool:
            parts = t.get("partitions") or []
            # kafka-python 3.x: "leader_id"; 2.x: "leader"
            return (not t.get("error_code") and bool(parts)
                    and all(p.get("leader_id", p.get("leader", -1)) >= 0 for p in parts))

        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(ready(t) for t in admin.describe_topics(topics)):
                    return
            except Exception:
                if time.monotonic() >= deadline:
                    raise
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topics without leaders after {timeout}s: {topics}")
            time.sleep(0.1)

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<KafkaBroker {self.port} {state} data={self.data_dir}>"
