"""bench/results/faults.json is the README's evidence: only passing fault runs write it."""
from __future__ import annotations

import ast
import sys
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
    """In tests/test_faults.py every ``record(...)`` is the last statement of its test, or
    of a scenario helper whose call is its test's last statement (inside a ``with`` block
    at most), so a failing assert leaves the scenario unrecorded."""
    tree = ast.parse((Path(__file__).parent / "test_faults.py").read_text())
    funcs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    tests = [f for name, f in funcs.items() if name.startswith("test_")]
    assert len(tests) == 8

    def last_call(f) -> ast.Call:
        last = f.body[-1]
        while isinstance(last, ast.With):
            last = last.body[-1]
        assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call), f.name
        return last.value

    def records_last(f) -> bool:
        calls = [n for n in ast.walk(f) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", None) == "record"]
        call = last_call(f)
        name = getattr(call.func, "id", None)
        if calls:
            return len(calls) == 1 and call is calls[0]
        return name in funcs and not name.startswith("test_") and records_last(funcs[name])

    for f in tests:
        assert records_last(f), f.name


def test_hog_runs_replace_the_final_code_and_keep_the_earlier_counts(tmp_path):
    path = tmp_path / "faults.json"
    path.write_bytes(orjson.dumps({
        "scenarios": {"a": {"x": 1}},
        "runs_with_cpu_hog": {"final_code": {"runs": 2, "passed": 2, "minutes": [11.2, 12.0]},
                              "earlier": [{"code": "old", "runs": 1, "passed": 0}],
                              "hog": "h"}}))
    final = Evidence(path).record_hog_runs(
        [{"passed": True, "minutes": 9.31}, {"passed": False, "minutes": 3.0, "failure": "F"}],
        hog="a hog", commit="abc", previous="before")
    assert final == {"runs": 2, "passed": 1, "minutes": [9.3, 3.0], "commit": "abc",
                     "failure": "F"}
    data = orjson.loads(path.read_bytes())
    assert data["scenarios"] == {"a": {"x": 1}}
    assert data["runs_with_cpu_hog"] == {
        "final_code": final, "hog": "a hog",
        "earlier": [{"code": "before", "runs": 2, "passed": 2, "minutes": [11.2, 12.0]},
                    {"code": "old", "runs": 1, "passed": 0}]}


def test_hog_runs_stop_at_the_first_failure_and_record_it(tmp_path):
    from pipeline.testing import hog_runs
    out = tmp_path / "faults.json"
    ok = f"{sys.executable} -c 'print(\"8 passed\")'"
    assert hog_runs.main(["--runs", "2", "--cmd", ok, "--logs", str(tmp_path),
                          "--out", str(out)]) == 0
    assert orjson.loads(out.read_bytes())["runs_with_cpu_hog"]["final_code"]["passed"] == 2
    bad = (f"{sys.executable} -c 'print(\"FAILED tests/test_faults.py::test_x - boom\"); "
           "raise SystemExit(1)'")
    assert hog_runs.main(["--runs", "3", "--cmd", bad, "--logs", str(tmp_path),
                          "--out", str(out)]) == 1
    block = orjson.loads(out.read_bytes())["runs_with_cpu_hog"]
    assert block["final_code"]["runs"] == 1 and block["final_code"]["passed"] == 0
    assert block["final_code"]["failure"] == "FAILED tests/test_faults.py::test_x"
    assert block["earlier"][0]["passed"] == 2
    assert (tmp_path / "faults-run-1.log").exists()
