"""Benchmark helpers shared by ``bench throughput`` and its subprocesses.

- :func:`detector_name` / :func:`embedder_source`: what the benchmark ran, for its report.
- ``python -m pipeline.bench._worker_proc``: the worker exactly as ``coverwatch worker`` runs
  it (same Settings from the environment, same :func:`run_worker`, or the supervisor when
  ``COVERWATCH_PROCESSES`` > 1), without the CLI.

The subprocess handle itself is :class:`pipeline.testing.worker.WorkerProcess`, shared with
the tests.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def embedder_source() -> str:
    return "pipeline.embed.get_embedder('hashing')"


def detector_name() -> str:
    return "coverwatch"


def main() -> int:
    from pipeline.settings import Settings
    from pipeline.stream.app import run_worker
    sys.argv = sys.argv[:1]   # faust parses sys.argv itself
    settings = Settings.from_env()
    loglevel = os.environ.get("COVERWATCH_LOGLEVEL", "info")
    if settings.processes > 1:   # as `coverwatch worker --processes N`
        from pipeline.stream.supervisor import supervise
        return supervise(settings, loglevel=loglevel)
    run_worker(settings, loglevel=loglevel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
