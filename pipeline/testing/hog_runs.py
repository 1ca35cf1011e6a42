"""``make test-faults-hog``: the fault suite several times in a row, each run beside a CPU hog.

Each run starts a process spinning on one core (``python -c 'while True: pass'``), runs the
suite (``make test-faults`` unless ``--cmd`` says otherwise) with its output in
``<logs>/faults-run-N.log``, and ends the hog by its pid, whatever happened. It stops at the
first failing run (what counts is runs passed in a row) and records the runs under
``runs_with_cpu_hog`` in ``bench/results/faults.json`` (:meth:`Evidence.record_hog_runs`).

    .venv/bin/python -m pipeline.testing.hog_runs --runs 5
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from pipeline.settings import REPO_ROOT
from pipeline.testing.evidence import Evidence

RESULTS = Path(REPO_ROOT) / "bench" / "results" / "faults.json"
HOG = [sys.executable, "-c", "while True: pass"]


def failure_of(log: Path) -> str:
    """The failing tests a pytest log names (its ``FAILED``/``ERROR`` summary lines), or
    its last line."""
    lines = log.read_text(errors="replace").splitlines()
    bad = [ln.split(" - ")[0] for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    return ", ".join(bad) or (lines[-1] if lines else "no output")


def commit() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True,
                              text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    # the suite rewrites faults.json itself: only other changes make the tree dirty
    dirty = [ln for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()
             if not ln.endswith("bench/results/faults.json")]
    return head + ("+dirty" if dirty else "")


def run(n: int, cmd: list[str], logs: Path) -> list[dict]:
    logs.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(1, n + 1):
        log = logs / f"faults-run-{i}.log"
        load = os.getloadavg()[0]
        hog = subprocess.Popen(HOG)
        t0 = time.monotonic()
        try:
            with open(log, "wb") as fh:
                rc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=fh,
                                    stderr=subprocess.STDOUT).returncode
        finally:
            hog.kill()
            hog.wait()
        r = {"passed": rc == 0, "minutes": (time.monotonic() - t0) / 60}
        if rc:
            r["failure"] = failure_of(log)
        out.append(r)
        print(f"run {i}/{n}: {'passed' if rc == 0 else 'FAILED'} in {r['minutes']:.1f} min "
              f"(load {load:.1f} at start; log {log})" + (f": {r['failure']}" if rc else ""),
              flush=True)
        if rc:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cmd", default="make test-faults", help="the suite to run")
    ap.add_argument("--logs", type=Path, default=Path("/tmp"))
    ap.add_argument("--out", type=Path, default=RESULTS, help="evidence file to record in")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    runs = run(args.runs, shlex.split(args.cmd), args.logs)
    if not args.no_record:
        Evidence(args.out).record_hog_runs(
            runs, hog=f"python -c 'while True: pass' on one of {os.cpu_count()} cores, "
                      "for the whole of each run", commit=commit())
    passed = all(r["passed"] for r in runs) and len(runs) == args.runs
    print(f"{sum(r['passed'] for r in runs)} of {args.runs} runs passed in a row", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
