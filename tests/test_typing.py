"""mypy on ``tests/typing/``: the public API's return types keep the caller's types.

``tests/typing/check_checkpoint_types.py`` holds the checks (``assert_type``); this test
runs mypy on it with the project's configuration (``[tool.mypy]`` in pyproject.toml).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy comes with the dev extra")

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "typing" / "check_checkpoint_types.py"


@pytest.mark.slow
def test_maybe_load_checkpoint_keeps_the_strategy_type(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--cache-dir",
         str(tmp_path / "mypy-cache"), str(CHECK.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
