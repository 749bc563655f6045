"""Means with 95% intervals, and paired differences between methods run on the same seeds.

The harness's runs of two methods on the same seed share everything but the method: the
class order (permuted by the seed), the initial weights, the mini-batch order. Their
difference on that seed is a *paired* difference; its mean over seeds, with a Student-t
95% interval, says whether one method is ahead of the other beyond the spread of the
seeds (:func:`paired_differences`). A difference whose interval holds 0 is a tie.

Pure functions of numbers; no third-party statistics package (the t quantiles are
tabulated).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Interval", "mean_interval", "paired_differences", "paired_markdown", "t_975"]

# Two-sided 95% quantiles of Student's t (the 0.975 quantile), by degrees of freedom.
_T_975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
    16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
    23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
    30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}


def t_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (tabulated; between
    30 and 120 the next smaller tabulated ``df``, a slightly wider interval; 1.960 above).

    Example:
        >>> t_975(4), t_975(45), t_975(1000)
        (2.776, 2.021, 1.96)
    """
    if df < 1:
        raise ValueError(f"Expected `df` >= 1, but got {df}")
    if df > 120:
        return 1.960
    return _T_975[max(d for d in _T_975 if d <= df)]


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and the half-width of its 95% interval (``None`` for
    one value: no spread to measure).

    Example:
        >>> Interval(0.70, 0.02, 5).text()
        '0.700 ± 0.020'
        >>> Interval(-0.01, 0.02, 5).contains_zero(), Interval(0.5, None, 1).text()
        (True, '0.500')
    """

    mean: float
    half_width: float | None
    n: int

    @property
    def low(self) -> float:
        """The interval's lower end (the mean itself for one value)."""
        return self.mean - (self.half_width or 0.0)

    @property
    def high(self) -> float:
        """The interval's upper end (the mean itself for one value)."""
        return self.mean + (self.half_width or 0.0)

    def contains_zero(self) -> bool:
        """Whether 0 lies in the interval (always for a single value)."""
        return self.half_width is None or self.low <= 0.0 <= self.high

    def text(self, digits: int = 3) -> str:
        """``mean ± half-width``, or the mean alone for one value."""
        if self.half_width is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def mean_interval(values: Iterable[float]) -> Interval:
    """The mean of ``values`` and its Student-t 95% interval.

    Example:
        >>> mean_interval([0.70, 0.72, 0.68, 0.71, 0.69]).text()
        '0.700 ± 0.020'
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("Expected at least one value, but got none")
    if len(xs) == 1:
        return Interval(xs[0], None, 1)
    half = t_975(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return Interval(statistics.mean(xs), half, len(xs))


def paired_differences(
    records: Sequence[dict[str, Any]], reference: str, peer: str, metric: str
) -> Interval | None:
    """``reference`` minus ``peer`` on ``metric``, paired by seed: the mean over the seeds
    both ran and its 95% interval; ``None`` if they share no seed.

    ``records`` are run records of one setting (stream, class order, memory): each has
    ``variant``, ``seed`` and ``metric``.

    Example:
        >>> runs = [dict(variant="a", seed=s, final_accuracy=0.70 + 0.01 * s) for s in range(3)]
        >>> runs += [dict(variant="b", seed=s, final_accuracy=0.65 + 0.02 * s) for s in range(4)]
        >>> paired_differences(runs, "a", "b", "final_accuracy").text()  # seeds 0, 1, 2
        '0.040 ± 0.025'
    """
    by_seed: dict[str, dict[int, float]] = {reference: {}, peer: {}}
    for r in records:
        if r["variant"] in by_seed and r.get(metric) is not None:
            by_seed[r["variant"]][r["seed"]] = r[metric]
    seeds = sorted(set(by_seed[reference]) & set(by_seed[peer]))
    if not seeds:
        return None
    return mean_interval(by_seed[reference][s] - by_seed[peer][s] for s in seeds)


#: The metrics of :func:`paired_markdown`'s tables: (record field, column title).
PAIRED_METRICS = (("final_accuracy", "final acc."),
                  ("average_incremental_accuracy", "avg. incr. acc."))


def _verdict(diff: Interval) -> str:
    if diff.n < 2:
        return "one seed"
    if diff.contains_zero():
        return "tie"
    return "ahead" if diff.mean > 0 else "behind"


def paired_markdown(records: Sequence[dict[str, Any]], reference: str = "m2kd") -> str:
    """One table per setting (kind, class order, stream, total memory) of ``records``:
    each variant's mean and 95% interval on each of :data:`PAIRED_METRICS`, and
    ``reference`` minus it paired by seed with its interval and a verdict (``ahead``,
    ``behind``, or ``tie`` when the interval holds 0). Runs over budget are left out."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("over_budget"):
            continue
        key = (r.get("kind", "headline"), r.get("class_order", "fixed"), r["stream"],
               r.get("total_memory") or 0, r.get("budget", 0) if not r.get("total_memory") else 0)
        groups.setdefault(key, []).append(r)
    lines: list[str] = []
    for (kind, order, stream, total, budget), rs in sorted(groups.items()):
        variants = list(dict.fromkeys(r["variant"] for r in rs))
        if reference not in variants:
            continue
        memory = f"{total:,} bytes in all" if total else f"{budget} exemplars"
        head = ["method", "seeds"]
        for _, title in PAIRED_METRICS:
            head += [title, f"{reference} − it", "verdict"]
        lines += ["", f"**{kind}, stream {stream}, {order} class order, {memory}** (mean ± "
                  f"95% interval over seeds; differences paired by seed)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for variant in variants:
            own = [r for r in rs if r["variant"] == variant]
            cells = [variant, str(len(own))]
            for metric, _ in PAIRED_METRICS:
                cells.append(mean_interval(r[metric] for r in own).text())
                diff = (None if variant == reference
                        else paired_differences(rs, reference, variant, metric))
                cells += ["–", "–"] if diff is None else [diff.text(), _verdict(diff)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines).strip() + ("\n" if lines else "")
