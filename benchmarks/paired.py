"""Two sets of run records, paired by seed: ``python -m benchmarks.paired --a ... --b ...``.

``compare report`` pairs each variant with ``m2kd`` within one setting (the same kind,
stream and total memory). This script pairs any two sets of records of one stream, of
any kind, for example M2KD's full copies at its own exemplar count (an ``ablation``
record) against Replay-LA at the same count (a ``headline`` record), and prints, for
each of :data:`benchmarks.stats.PAIRED_METRICS`, the mean of ``a`` minus ``b`` over the
seeds both hold, with its 95% interval:

    python -m benchmarks.paired \\
        --a benchmarks/results/fmnist-evidence-2p1-ablation/runs/ablation/*.json \\
        --b benchmarks/results/fmnist-evidence-2p1-ablation/runs/headline/*.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.stats import PAIRED_METRICS, Interval, paired_differences

__all__ = ["main", "paired"]


def paired(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]],
           metric: str) -> Interval | None:
    """``a`` minus ``b`` on ``metric``, paired by ``seed`` (``None``: no seed in common):
    :func:`benchmarks.stats.paired_differences` with the two sets as two variants.

    Example:
        >>> a = [dict(seed=s, final_accuracy=0.80 + 0.01 * s) for s in range(3)]
        >>> b = [dict(seed=s, final_accuracy=0.78 + 0.01 * s) for s in range(1, 4)]
        >>> paired(a, b, "final_accuracy").text()  # seeds 1 and 2
        '0.020 ± 0.000'
    """
    tagged = [{**r, "variant": "a"} for r in a] + [{**r, "variant": "b"} for r in b]
    return paired_differences(tagged, "a", "b", metric)


def _load(paths: Sequence[str]) -> list[dict[str, Any]]:
    records = [json.loads(Path(p).read_text()) for p in paths]
    streams = {r["stream"] for r in records}
    if len(streams) != 1:
        raise SystemExit(f"Expected records of one stream, but got {sorted(streams)}")
    if len({r["seed"] for r in records}) != len(records):
        raise SystemExit("Expected one record per seed in each set, but a seed repeats")
    return records


def main(argv: Sequence[str] | None = None) -> dict[str, str | None]:
    """Entry point; prints and returns each metric's paired difference as text."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.paired",
                                description=__doc__.splitlines()[0])
    p.add_argument("--a", nargs="+", required=True, help="the records of the first set")
    p.add_argument("--b", nargs="+", required=True, help="the records it is compared with")
    args = p.parse_args(argv)
    a, b = _load(args.a), _load(args.b)
    out: dict[str, str | None] = {}
    for metric, title in PAIRED_METRICS:
        diff = paired(a, b, metric)
        out[metric] = None if diff is None else diff.text()
        seeds = "no seed in common" if diff is None else f"{diff.n} seeds"
        print(f"{title} a − b: {out[metric] or '–'} ({seeds})")
    return out


if __name__ == "__main__":
    main()
