"""bench/results/faults.json is the README's evidence: only passing fault runs write it."""
from __future__ import annotations

import ast
from pathlib import Path

import orjson

from pipeline.testing.evidence import Evidence


def test_a_failed_run_leaves_the_evidence_file_alone(tmp_path):
    path = tmp_path / "faults.json"
    path.write_bytes(orjson.dumps({"scenarios": {"worker_sigkill": {"duplicates": 0}}}))
    before = path.read_bytes()
    ev = Evidence(path)
    ev.record("worker_sigkill", {"duplicates": 7})
    assert ev.write(failed=True) is False
    assert path.read_bytes() == before


def test_a_passing_run_merges_its_scenarios(tmp_path):
    path = tmp_path / "faults.json"
    path.write_bytes(orjson.dumps({"scenarios": {"a": {"x": 1}, "b": {"x": 2}}, "note": "n"}))
    ev = Evidence(path)
    ev.record("b", {"x": 3})
    assert ev.write(failed=False) is True
    assert orjson.loads(path.read_bytes()) == {"scenarios": {"a": {"x": 1}, "b": {"x": 3}},
                                               "note": "n"}
    assert Evidence(tmp_path / "new.json").write(failed=False) is False   # nothing recorded


def test_fault_scenarios_record_only_after_their_asserts():
    """In tests/test_faults.py every ``record(...)`` is its test's last statement, so a
    failing assert leaves the scenario unrecorded."""
    tree = ast.parse((Path(__file__).parent / "test_faults.py").read_text())
    tests = [f for f in tree.body if isinstance(f, ast.FunctionDef)
             and f.name.startswith("test_")]
    assert len(tests) == 5
    for f in tests:
        calls = [n for n in ast.walk(f) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", None) == "record"]
        assert len(calls) == 1, f.name
        last = f.body[-1]
        assert isinstance(last, ast.Expr) and last.value is calls[0], f.name
