"""The Split digits variants benchmark's ``--out`` writes what the docs render (one
variant, one seed)."""

from __future__ import annotations

import pytest

from benchmarks import digits_variants


def test_out_writes_the_record_the_docs_render(tmp_path, capsys, rendered):
    digits_variants.main(["replay only", "--seeds", "0", "--out", str(tmp_path)])
    record, table = rendered(tmp_path)
    assert record["seeds"] == [0]
    [row] = record["rows"]
    assert row["variant"] == "replay only" and row["options"] == digits_variants.VARIANTS[
        "replay only"]
    assert 0.5 < row["accuracy"][0] <= 1  # replay keeps most of the old classes
    printed = capsys.readouterr().out
    assert all(line in printed for line in table.splitlines())
    assert table.splitlines()[-1].startswith("| replay only | ")


def test_an_unknown_variant_is_refused():
    with pytest.raises(SystemExit):
        digits_variants.main(["no such variant"])
