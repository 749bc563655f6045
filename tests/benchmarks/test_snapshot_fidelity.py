import json

from benchmarks import snapshot_fidelity
from benchmarks.past_defaults import on_01


def test_runs_under_the_pinned_options_and_records_them(fmnist_root, tmp_path):
    out = tmp_path / "fidelity.jsonl"
    assert snapshot_fidelity.main([
        "--root", str(fmnist_root), "--out", str(out), "--streams", "5x2", "--seeds", "0",
        "--recalibrate", "on", "--mem-size", "10", "--epochs", "2",
        "--train-per-class", "6", "--test-per-class", "3",
    ]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    # the committed records ran under 0.1's defaults, whatever today's are
    assert record["options"] == {**on_01(), "recalibrate_bn": True}
    assert record["options"]["prune_ratio"] == "fair"
    assert [row["experience"] for row in record["rows"]] == [0, 1, 2, 3, 4]
    assert all(0.0 <= row["snapshot_own"] <= 1.0 for row in record["rows"])
