"""The detector core: plain Python, no I/O, driven identically by the worker, replay and benchmarks.

Every detector follows one small protocol (see :class:`pipeline.detect.base.Detector`):
``update(event) -> Scored`` learns from one event and returns what the shell needs (the
event's locality cell, its scores, and any alerts), and ``dump``/``load`` move per-tenant
state in and out so the shell can checkpoint it.
"""
# Bump when per-tenant or population state changes shape: checkpoints written by another
# version are discarded at restore (those tenants start fresh) instead of being misread.
DETECTOR_VERSION = "0.6.0"
