"""Realistic labelled traffic for demos, tests and benchmarks."""
