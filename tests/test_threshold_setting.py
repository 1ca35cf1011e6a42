"""COVERWATCH_THRESHOLD: the operator's one knob for trading attackers against false
positives reaches the detector that every driver (worker, replay, benchmarks) builds."""
import numpy as np
import pytest

from pipeline import build
from pipeline.contracts.events import Event
from pipeline.settings import Settings

T0 = 1767225600000


def sweep_alerts(threshold: str | None) -> int:
    env = {"COVERWATCH_CAMPAIGNS": "0", "COVERWATCH_EMBEDDER": "none"}
    if threshold is not None:
        env["COVERWATCH_THRESHOLD"] = threshold
    proc, _ = build.processor(Settings.from_env(env))
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((5, 384))
    for i in range(200):            # narrow apps warm the population
        proc.detector.update_many([Event(f"a{t}-{i}", T0 + i * 1000, f"app{t}", embedding=(
            topics[(i + t) % 5] + 0.05 * rng.standard_normal(384)).astype(np.float32))
            for t in range(40)])
    out = proc.detector.update_many([Event(f"s-{i}", T0 + i * 1000, "sweeper", embedding=(
        rng.standard_normal(384)).astype(np.float32)) for i in range(200)])
    return sum(len(s.alerts) for s in out)


def test_the_threshold_reaches_the_detector_and_decides_what_alerts():
    assert build.processor(Settings.from_env({"COVERWATCH_CAMPAIGNS": "0"}))[0] \
        .detector.threshold == 1.0
    assert sweep_alerts(None) >= 1
    assert sweep_alerts("1.2") >= 1            # a sweep is far above 1.2
    assert sweep_alerts("1000") == 0


@pytest.mark.parametrize("value", ["0.5", "0", "-1", "high"])
def test_a_threshold_at_or_below_the_release_level_is_refused(value):
    with pytest.raises(SystemExit, match="COVERWATCH_THRESHOLD"):
        Settings.from_env({"COVERWATCH_THRESHOLD": value})
