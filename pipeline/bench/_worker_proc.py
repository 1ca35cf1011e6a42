"""Benchmark helpers shared by ``bench throughput`` and its subprocesses.

- :func:`text_embedder` / :func:`detector`: the production factories of
  :mod:`pipeline.process`, with a fallback while ``pipeline.embed.get_embedder`` (or the
  coverwatch detector) is still being written, so the benchmark measures what exists.
- ``python -m pipeline.bench._worker_proc``: ``coverwatch worker`` exactly as the CLI runs
  it (same Settings from the environment, same app), after installing those fallbacks.

The subprocess handle itself is :class:`pipeline.testing.worker.WorkerProcess`, shared with
the tests.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

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


def main() -> int:
    install_fallbacks()
    from pipeline.cli import main as cli_main
    return cli_main(["worker", "--loglevel", os.environ.get("COVERWATCH_LOGLEVEL", "info")])


if __name__ == "__main__":
    sys.exit(main())
