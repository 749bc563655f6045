"""Joint training's accuracy per epoch and where it plateaus, on the tiny Fashion-MNIST set."""

from __future__ import annotations

from benchmarks import joint_plateau


def test_curve_plateau_and_the_record_the_docs_render(fmnist_root, tmp_path, rendered):
    out = tmp_path / "out"
    record = joint_plateau.main(["--root", str(fmnist_root), "--train-per-class", "12",
                                 "--test-per-class", "6", "--epochs", "6", "--seeds", "0", "1",
                                 "--width", "4", "--batch-size", "16", "--out", str(out)])
    assert [r["seed"] for r in record["runs"]] == [0, 1]
    for run in record["runs"]:
        assert len(run["accuracy"]) == 6 and all(0 <= a <= 1 for a in run["accuracy"])
        level = sum(run["accuracy"][-5:]) / 5 - 0.01
        assert all(a >= level for a in run["accuracy"][run["plateau_epoch"] - 1 :])
        assert run["plateau_epoch"] == 1 or run["accuracy"][run["plateau_epoch"] - 2] < level
    assert record["runs"][0]["accuracy"] != record["runs"][1]["accuracy"]  # own seeds
    # the classes' pixel means differ: joint training learns them
    assert max(record["runs"][0]["accuracy"]) > 0.3
    saved, page = rendered(out)
    assert saved["runs"] == record["runs"] and page == joint_plateau.markdown(record)
    assert "| 0 |" in page and "| 1 |" in page


def test_same_seed_same_curve(fmnist_root):
    args = ["--root", str(fmnist_root), "--train-per-class", "12", "--test-per-class", "6",
            "--epochs", "2", "--seeds", "3", "--width", "4", "--batch-size", "16"]
    assert joint_plateau.main(args)["runs"][0]["accuracy"] == \
        joint_plateau.main(args)["runs"][0]["accuracy"]


def test_runs_of_several_lengths_with_the_rate_annealed(fmnist_root, tmp_path, rendered):
    out = tmp_path / "out"
    record = joint_plateau.main(["--root", str(fmnist_root), "--train-per-class", "12",
                                 "--test-per-class", "6", "--epochs", "1", "3", "--seeds", "0",
                                 "1", "--schedule", "cosine", "--width", "4", "--batch-size",
                                 "16", "--out", str(out)])
    assert [(r["seed"], r["epochs"]) for r in record["runs"]] == [(0, 1), (0, 3), (1, 1), (1, 3)]
    assert [len(r["accuracy"]) for r in record["runs"]] == [1, 3, 1, 3]
    # the rate falls after each epoch: both runs of a seed train their first epoch alike
    assert record["runs"][1]["accuracy"][0] == record["runs"][0]["accuracy"][0]
    assert joint_plateau.shortest_within(record) in (1, 3)
    saved, page = rendered(out)
    assert page == joint_plateau.markdown(record) and "| mean |" in page
    assert "fewest epochs within 0.01 of the 3-epoch runs' mean" in page
