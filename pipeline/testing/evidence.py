"""The fault suite's evidence file (bench/results/faults.json), written from passing runs only.

Each scenario calls :meth:`Evidence.record` as its last statement, after its asserts, so a
failing scenario records nothing; :meth:`Evidence.write` then merges what was recorded into
the file, unless the run had a failure (``failed=True``), in which case the file is left as
it was: the README quotes it. :meth:`Evidence.record_hog_runs` records repeated runs made
beside a CPU hog (``runs_with_cpu_hog``; :mod:`pipeline.testing.hog_runs` makes them).
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

    def record_hog_runs(self, runs: list[dict], hog: str, commit: str,
                        previous: str = "the previous final code") -> dict:
        """Record consecutive fault-suite runs made beside a CPU hog (``runs_with_cpu_hog``).

        ``runs``: one dict per run, in order: ``passed`` (bool), ``minutes`` and, for a failed
        run, ``failure``. They become ``final_code`` (runs, runs passed, minutes, commit); the
        ``final_code`` they replace moves to the front of ``earlier``, labelled with its
        commit or ``previous``, so no earlier count is lost. The ``scenarios`` are left as
        they are (each passing run merged its own). Returns the new ``final_code``.
        """
        data = orjson.loads(self.path.read_bytes()) if self.path.exists() else {}
        block = data.setdefault("runs_with_cpu_hog", {})
        old = block.get("final_code")
        if old:
            label = old.get("commit") or previous
            block["earlier"] = [{"code": label, **{k: v for k, v in old.items()
                                                   if k != "commit"}},
                                *block.get("earlier", [])]
        final = {"runs": len(runs), "passed": sum(1 for r in runs if r["passed"]),
                 "minutes": [round(r["minutes"], 1) for r in runs], "commit": commit}
        failures = [r["failure"] for r in runs if not r["passed"] and r.get("failure")]
        if failures:
            final["failure"] = "; ".join(failures)
        block["final_code"] = final
        block["hog"] = hog
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        return final
