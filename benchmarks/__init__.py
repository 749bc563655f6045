"""Measurement scripts (run as ``python -m benchmarks.<name>``); not part of the package."""
