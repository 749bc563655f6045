"""The step-cost benchmark runs and reports consistent figures (tiny batch)."""

from __future__ import annotations

import pytest

from benchmarks import step_cost


def test_measure_reports_positive_times_and_consistent_ratios():
    r = step_cost.measure(n_teachers=2, batch=4, reps=1)
    assert all(r[k] > 0 for k in ("student", "teacher", "m2kd", "floor"))
    assert r["ratio"] == pytest.approx(r["m2kd"] / (r["student"] + 2 * r["teacher"]))
    assert r["ratio_floor"] == pytest.approx(r["m2kd"] / r["floor"])


def test_main_prints_one_row_per_teacher_count(capsys):
    step_cost.main(["--teachers", "1", "2", "--batch", "2", "--reps", "1"])
    rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and line[2].isdigit()
    ]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"]


def test_comparison_rows_hold_the_baseline_and_every_variant(capsys):
    step_cost.main(["--teachers", "2", "--batch", "2", "--reps", "1", "--teacher-dtype", "bfloat16",
                    "--channels-last", "all", "--uncached-teachers"])
    rows = [
        line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| 2 |")
    ]
    assert [r[2].strip() for r in rows] == [
        "default",
        "bfloat16",
        "channels_last all",
        "bfloat16 + channels_last all",
        "nested, cache_teachers=False",
    ]
    assert float(rows[0][4]) == 1.0 and all(float(r[3]) > 0 for r in rows)


def test_teacher_batching_rows_compare_vmap_and_streams_with_the_loop(capsys):
    step_cost.main(
        [
            "--teachers", "2", "--batch", "2", "--reps", "1", "--teacher-batching", "vmap",
            "streams", "--teacher-dtype", "bfloat16",
        ]
    )
    rows = [
        line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| 2 |")
    ]
    assert [r[2].strip() for r in rows] == [
        "default", "bfloat16", "teacher_batching=vmap", "bfloat16 + teacher_batching=vmap",
        "teacher_batching=streams", "bfloat16 + teacher_batching=streams",
    ]
    assert all(float(r[3]) > 0 for r in rows)
