"""The store-memory benchmark's teachers are exact and ``--out`` writes what the docs
render (2 experiences of 2 classes)."""

from __future__ import annotations

from benchmarks import store_memory


def test_out_writes_the_record_the_docs_render(tmp_path, capsys, rendered):
    status = store_memory.main(["--experiences", "2", "--classes-per-experience", "2",
                                "--out", str(tmp_path)])
    record, table = rendered(tmp_path)
    assert record["exact"] == record["exact_restored"] == 2
    # the file's fixed overhead weighs more in a store this small than the 10 % that
    # the full setting's exit status allows
    assert status == (0 if store_memory.ok(record) else 1)
    assert 1 < record["saved_bytes"] / record["nbytes"] < 1.25
    total = next(r["bytes"] for r in record["rows"] if "nbytes()" in r["what"])
    assert total == record["nbytes"] == sum(r["bytes"] for r in record["rows"][:4])
    assert record["nbytes"] < 2 * record["model_bytes"]  # two snapshots, less than two copies
    # the printed table is the one the docs render
    assert table in capsys.readouterr().out
    assert table.count("\n| ") == len(record["rows"]) + 1  # the separator row, then the rows
