"""The fault suite's evidence file (bench/results/faults.json), written from passing runs only.

Each scenario calls :meth:`Evidence.record` as its last statement, after its asserts, so a
failing scenario records nothing; :meth:`Evidence.write` then merges what was recorded into
the file, unless the run had a failure (``failed=True``), in which case the file is left as
it was: the README quotes it.
"""
from __future__ import annotations

from pathlib import Path

import orjson


class Evidence:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.scenarios: dict[str, dict] = {}

    def record(self, name: str, figures: dict) -> None:
        self.scenarios[name] = figures

    def write(self, failed: bool) -> bool:
        """Merge the recorded scenarios into the file; returns whether it was written."""
        if failed or not self.scenarios:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = orjson.loads(self.path.read_bytes()) if self.path.exists() else {}
        old.setdefault("scenarios", {}).update(self.scenarios)
        self.path.write_bytes(orjson.dumps(old, option=orjson.OPT_INDENT_2))
        return True
