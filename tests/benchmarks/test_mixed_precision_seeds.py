from benchmarks import mixed_precision_seeds


def test_table_has_one_row_per_seed_with_each_dtypes_accuracy(capsys):
    assert mixed_precision_seeds.main(["--seeds", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| seed | float32 | bfloat16 | float16 |"
    cells = lines[2].strip("|").split("|")
    assert len(lines) == 3 and cells[0].strip() == "1"
    assert all(0.5 < float(c) <= 1.0 for c in cells[1:])  # the test's bar, every dtype
