"""The teacher-memory benchmark reports what each cache setting holds (tiny batch)."""

from __future__ import annotations

import pytest

from benchmarks import teacher_memory


@pytest.mark.parametrize("mode", ["nested", "full"])
def test_uncached_teachers_hold_one_model_at_most_and_none_after_a_step(mode):
    cached = teacher_memory.measure(mode, True, n_teachers=3, batch=2, reps=1)
    uncached = teacher_memory.measure(mode, False, n_teachers=3, batch=2, reps=1)
    # nested: the owner indices, unpacked (1 byte per prunable weight)
    owners = uncached["held_after"]
    assert uncached["teachers_after"] == 0 and (owners > 0) == (mode == "nested")
    one = uncached["held_during"] - owners  # one dense teacher
    assert one > 4 * owners and cached["teachers_after"] == 3
    assert cached["held_during"] == cached["held_after"] == pytest.approx(3 * one, rel=0.01)
    assert all(r[k] > 0 for r in (cached, uncached) for k in ("step", "build_all", "rss_peak"))


def test_main_prints_one_row_per_mode_and_setting(monkeypatch, capsys):
    monkeypatch.setattr(
        teacher_memory,
        "_in_subprocess",
        lambda mode, cache, args: teacher_memory.measure(mode, cache, args.teachers, args.batch, 1),
    )
    teacher_memory.main(["--teachers", "2", "--batch", "2", "--reps", "1", "--modes", "full"])
    rows = [
        line.split("|")[1:3]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| full")
    ]
    assert [(m.strip(), c.strip()) for m, c in rows] == [("full", "True"), ("full", "False")]


def test_out_writes_the_record_the_docs_render(monkeypatch, capsys, tmp_path, rendered):
    monkeypatch.setattr(
        teacher_memory,
        "_in_subprocess",
        lambda mode, cache, args: teacher_memory.measure(mode, cache, args.teachers, args.batch, 1),
    )
    teacher_memory.main(["--teachers", "2", "--batch", "2", "--reps", "1", "--modes", "nested",
                         "--out", str(tmp_path)])
    record, table = rendered(tmp_path)
    assert [(r["mode"], r["cache"]) for r in record["rows"]] == [("nested", True),
                                                                 ("nested", False)]
    assert (record["teachers"], record["batch"], record["reps"]) == (2, 2, 1)
    printed = capsys.readouterr().out
    assert all(line in printed for line in table.splitlines())
