"""The JSON record a benchmark script writes with ``--out DIR``, for the documentation.

Each script that the docs render with the ``m2kd-record`` directive
(``docs/_ext/m2kd_docs.py``) starts its record with :func:`header` (the script's name,
the command line, the date), adds its own fields, writes it with :func:`write` to
``DIR/results.json`` and has a ``markdown(record)`` function that prints its table
from it, the same on the terminal and on the page.
"""

from __future__ import annotations

import datetime
import json
import shlex
import sys
from pathlib import Path
from typing import Any

# The scripts whose ``--out`` records the docs' ``m2kd-record`` directive renders
# (``benchmarks.<name>.markdown``). Here, not in the docs extension, so that the tests
# can check a record against it without the docs toolchain installed.
RECORD_SCRIPTS = ("store_memory", "teacher_memory", "digits_variants", "phase_times",
                  "joint_plateau", "teacher_build")


def header(benchmark: str, argv: list[str] | None) -> dict[str, Any]:
    """The fields every record starts with: ``benchmark`` (the module under
    ``benchmarks``), ``command`` (as run; ``argv`` ``None``: this process's) and
    ``date`` (UTC, ``YYYY-MM-DD``). The command is quoted for a shell, so that it runs
    again as written.

    Example:
        >>> header("digits_variants", ["replay only", "--seeds", "0"])["command"]
        "python -m benchmarks.digits_variants 'replay only' --seeds 0"
    """
    args = sys.argv[1:] if argv is None else argv
    return dict(
        benchmark=benchmark,
        command=shlex.join(["python", "-m", f"benchmarks.{benchmark}", *args]),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    )


def write(record: dict[str, Any], out: str | Path) -> Path:
    """Write ``record`` to ``out/results.json`` (``out`` created if missing); return the path."""
    path = Path(out) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"\nwrote {path}")
    return path


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table.

    Example:
        >>> for line in table(["a", "b"], [["1", "2"]]):
        ...     print(line)
        | a | b |
        |---|---|
        | 1 | 2 |
    """
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(row) + " |" for row in rows)]
