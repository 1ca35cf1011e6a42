"""Benchmarks: each prints a table and writes JSON (and the same table as Markdown) under
``bench/results/``."""
from __future__ import annotations

from pathlib import Path

import orjson


def save(out: str | Path, result: dict, md: str) -> Path:
    """Write ``result`` as JSON to ``out`` and ``md`` beside it (``.md``); returns ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    out.with_suffix(".md").write_text(md)
    return out
