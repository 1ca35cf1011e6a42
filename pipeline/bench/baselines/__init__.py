"""Prior-art detectors, each faithful to its paper and behind the same Detector protocol.

Every baseline is calibrated on benign traffic of the calibration split with
``Baseline.calibrate(events, target_fpr=...)`` and then run on the report split.
"""
from pipeline.bench.baselines.coverage import CoverageBaseline
from pipeline.bench.baselines.mmd import MMDBaseline
from pipeline.bench.baselines.prada import PradaBaseline
from pipeline.bench.baselines.volume import VolumeBaseline

BASELINES = {"volume": VolumeBaseline, "prada": PradaBaseline, "coverage": CoverageBaseline,
             "mmd": MMDBaseline}
__all__ = ["BASELINES", "CoverageBaseline", "MMDBaseline", "PradaBaseline", "VolumeBaseline"]
