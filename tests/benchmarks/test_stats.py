"""Intervals and paired differences: the verdicts the benchmark tables print."""

from __future__ import annotations

import random
import statistics

import pytest

from benchmarks.stats import mean_interval, paired_differences, paired_markdown, t_975


def test_the_interval_covers_the_mean_about_95_times_in_100():
    rng = random.Random(0)
    covered = 0
    for _ in range(2000):
        interval = mean_interval(rng.gauss(0.5, 0.1) for _ in range(5))
        covered += interval.low <= 0.5 <= interval.high
    assert 0.93 < covered / 2000 < 0.97


def test_t_quantiles_fall_towards_the_normal_one():
    values = [t_975(df) for df in (1, 2, 5, 10, 30, 60, 120, 121)]
    assert values == sorted(values, reverse=True) and values[-1] == 1.96
    with pytest.raises(ValueError, match="df"):
        t_975(0)


def _runs(variant, finals, offset=0.0):
    return [dict(variant=variant, seed=s, stream="5x2", kind="memory", class_order="permuted",
                 total_memory=1000, final_accuracy=f + offset,
                 average_incremental_accuracy=f + offset + 0.1)
            for s, f in enumerate(finals)]


def test_pairing_removes_the_spread_the_seeds_share():
    # Seeds differ a lot from each other; on every seed "a" is 0.01 ahead of "b".
    base = [0.5, 0.7, 0.6, 0.8, 0.55]
    records = _runs("a", base, 0.01) + _runs("b", base)
    paired = paired_differences(records, "a", "b", "final_accuracy")
    assert paired.mean == pytest.approx(0.01) and paired.half_width == pytest.approx(0.0, abs=1e-12)
    unpaired = mean_interval(r["final_accuracy"] for r in records if r["variant"] == "a")
    assert unpaired.half_width > 0.1  # the seeds' spread hides the gap without pairing
    assert paired_differences(records, "a", "c", "final_accuracy") is None


def test_paired_table_says_ahead_behind_and_tie():
    base = [0.5, 0.7, 0.6, 0.8, 0.55]
    noise = [0.01, -0.012, 0.008, -0.009, 0.003]
    records = (_runs("m2kd", base, 0.02) + _runs("behind", base, 0.04)
               + _runs("tied", [b + n for b, n in zip(base, noise, strict=True)], 0.02)
               + [dict(r, over_budget=True, variant="over") for r in _runs("x", base)])
    table = paired_markdown(records)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()
            if line.startswith("| ") and "method" not in line}
    assert set(rows) == {"m2kd", "behind", "tied"}  # over budget: left out
    assert rows["behind"].count("behind") == 1 + 2  # its name and both metrics' verdicts
    assert rows["tied"].count("tie") == 1 + 2
    assert "-0.020 ± 0.000" in rows["behind"]
    assert statistics.mean(base) + 0.02 == pytest.approx(
        float(rows["m2kd"].split(" | ")[2].split(" ± ")[0]), abs=1e-3)
    assert "1,000 bytes in all" in table and "stream 5x2, permuted class order" in table
