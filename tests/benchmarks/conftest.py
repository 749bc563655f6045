"""Fixtures of the benchmark tests: what the documentation's ``m2kd-record`` directive
needs of a benchmark script's ``--out`` record."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.records import RECORD_SCRIPTS


@pytest.fixture
def rendered():
    """``rendered(folder)``: the record in ``folder/results.json`` (checked to be one the
    directive reads) and the table the directive renders from it."""
    return _rendered


def _rendered(folder: Path) -> tuple[dict[str, Any], str]:
    record = json.loads((folder / "results.json").read_text())
    assert record["benchmark"] in RECORD_SCRIPTS
    assert record["command"].startswith(f"python -m benchmarks.{record['benchmark']}")
    assert len(record["date"]) == len("2026-12-01")
    script = importlib.import_module(f"benchmarks.{record['benchmark']}")
    return record, script.markdown(record)
