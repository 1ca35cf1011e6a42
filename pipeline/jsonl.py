"""Log files as lines: JSONL or JSONL.gz (``-`` is stdin), for ``replay`` and ``produce``."""
from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import IO, Iterable, Iterator


def open_lines(path: str | Path) -> IO[bytes]:
    p = str(path)
    if p == "-":
        return sys.stdin.buffer
    return gzip.open(p, "rb") if p.endswith(".gz") else open(p, "rb")


def lines(paths: Iterable[str | Path]) -> Iterator[bytes]:
    """Every non-blank line of ``paths`` in order, without its line ending."""
    for path in paths:
        with open_lines(path) as fh:
            for line in fh:
                line = line.rstrip(b"\r\n")
                if line and not line.isspace():
                    yield line
