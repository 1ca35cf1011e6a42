"""``coverwatch worker --processes N``: N worker processes of one app, one consumer group.

The supervisor forks N children before anything else starts (no thread, no event loop, no
Kafka client or ClickHouse engine exists yet in the parent), and each child runs
:func:`pipeline.stream.app.run_worker` exactly as ``coverwatch worker`` does, with the same
app id (so they share the consumer groups and split the partitions, hence the tenants,
between them) and, per child ``i`` (:func:`child_settings`):

- web port ``COVERWATCH_WEB_PORT + i`` (``/metrics``, ``/health``, ``/query`` of child ``i``);
- data directory ``<COVERWATCH_DATA_DIR>/p<i>`` (each child's RocksDB tables and local
  checkpoints: RocksDB opens a database from one process only);
- with an embedded engine (``chdb://PATH``), ``chdb://PATH/p<i>``: the embedded ClickHouse
  opens a path from one process only, so each child stores the rows of its own tenants in
  its own engine. A ClickHouse server (``http(s)://``) is shared by all children.

Signals: SIGTERM and SIGINT to the supervisor are forwarded to every child, and the
supervisor waits for them (children sit in their own process group, so a terminal's Ctrl-C
reaches them once, through the supervisor; each child also gets SIGTERM if the supervisor
dies, via ``PR_SET_PDEATHSIG``).

A child that exits on its own is not restarted: the supervisor logs it, stops the others
(SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``) and exits non-zero, so whatever runs the
supervisor (systemd, Kubernetes, a shell loop) sees the failure and restarts the whole
group; the tenants of the dead child would otherwise move to the survivors and back.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from pipeline.settings import Settings

log = logging.getLogger("coverwatch.supervisor")

STOP_TIMEOUT_S = 60.0
POLL_S = 0.2
PR_SET_PDEATHSIG = 1


def child_settings(settings: Settings, i: int) -> Settings:
    """The settings of child ``i``: its own web port, data directory and embedded engine."""
    s = settings
    dsn = s.clickhouse_dsn
    if s.embedded_clickhouse:
        dsn = f"chdb://{Path(dsn[len('chdb://'):]) / f'p{i}'}"
    return replace(s, processes=1, web_port=s.web_port + i,
                   data_dir=str(Path(s.data_dir) / f"p{i}"), clickhouse_dsn=dsn)


def _child(settings: Settings, i: int, loglevel: str, parent: int) -> int:
    """In the forked child: detach from the terminal's process group, die with the parent,
    run the worker."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.setpgid(0, 0)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor still forwards signals
        pass
    if os.getppid() != parent:   # the supervisor died before prctl took effect
        return 1
    from pipeline.stream.app import run_worker
    s = child_settings(settings, i)
    Path(s.data_dir).mkdir(parents=True, exist_ok=True)
    log.info("worker process %d (pid %d): web port %d, data %s", i, os.getpid(),
             s.web_port, s.data_dir)
    run_worker(s, loglevel=loglevel)
    return 0


def _fork(settings: Settings, i: int, loglevel: str) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = _child(settings, i, loglevel, parent)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report, never return into the parent's code
        log.exception("worker process %d failed", i)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return 0   # not reached


def supervise(settings: Settings, loglevel: str = "info") -> int:
    """Run ``settings.processes`` workers; return when all have exited (the exit code)."""
    n = settings.processes
    if threading.active_count() > 1:   # native pools (OpenBLAS) re-create theirs at fork
        log.warning("forking with %d Python threads alive: children inherit only this one",
                    threading.active_count())
    children: dict[int, int] = {}   # pid -> child index
    stopping = {"signal": None}

    def forward(signum, frame):
        stopping["signal"] = signum
        for pid in list(children):
            _kill(pid, signum)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(n):
        pid = _fork(settings, i, loglevel)
        children[pid] = i
        c = child_settings(settings, i)
        log.info("started worker process %d/%d, pid %d: web port %d, data %s, clickhouse %s",
                 i, n, pid, c.web_port, c.data_dir, c.clickhouse_dsn.split("@")[-1])
    if stopping["signal"] is not None:   # a signal came while forking: all get it
        forward(stopping["signal"], None)
    code = 0
    while children:
        ended = _reap(children)
        if ended is None:
            time.sleep(POLL_S)   # a forwarded signal's handler runs meanwhile
            continue
        pid, i, rc = ended
        if stopping["signal"] is not None:
            log.info("worker process %d (pid %d) stopped, exit %d", i, pid, rc)
            code = code or (rc if rc > 0 else 0)
            continue
        # a child ended on its own: no silent restart, the group stops and reports it
        log.error("worker process %d (pid %d) exited on its own (exit %d): stopping the "
                  "other %d and exiting non-zero", i, pid, rc, len(children))
        code = rc if rc > 0 else 1
        stopping["signal"] = signal.SIGTERM
        _stop_all(children)
    return code


def _reap(children: dict[int, int]) -> tuple[int, int, int] | None:
    """(pid, index, exit code) of one ended child, removed from ``children``; None while all
    run. Only our children are waited for (``os.wait()`` would also reap processes others
    in this process started)."""
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:   # reaped elsewhere: its status is lost
            return pid, children.pop(pid), 1
        if done:
            return pid, children.pop(pid), os.waitstatus_to_exitcode(status)
    return None


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stop_all(children: dict[int, int]) -> None:
    """SIGTERM every child, SIGKILL what is still alive after ``STOP_TIMEOUT_S``."""
    for pid in children:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while children and time.monotonic() < deadline:
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                log.info("worker process %d (pid %d) stopped, exit %d", children.pop(pid),
                         pid, os.waitstatus_to_exitcode(status))
        time.sleep(0.2)
    for pid in list(children):
        log.error("worker process %d (pid %d) did not stop: SIGKILL", children[pid], pid)
        _kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        children.pop(pid)

