"""The phase timer: each second of a run in one phase, each method's own phases, nothing left
patched."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import phase_times
from benchmarks.phase_times import PHASES, PhaseClock, instrumented, patch_targets

TINY = ["--stream", "2x5", "--exemplars", "10", "--epochs", "1", "--train-per-class", "6",
        "--test-per-class", "3", "--batch-size", "16", "--width", "4", "--preset", "quick"]


def test_every_timed_function_exists_and_is_restored():
    targets = patch_targets()
    originals = [vars(owner)[name] for owner, name, _ in targets]  # KeyError: a name moved
    assert {phase for *_, phase in targets} <= set(PHASES)
    assert {"data", "teachers", "exemplars", "batchnorm", "keep search"} <= {p for *_, p in targets}
    pairs = list(zip(targets, originals, strict=True))
    with instrumented(PhaseClock()):
        assert all(vars(owner)[name] is not original for (owner, name, _), original in pairs)
    assert all(vars(owner)[name] is original for (owner, name, _), original in pairs)


def test_a_data_loader_is_timed_step_by_step_and_still_yields_its_batches():
    clock = PhaseClock()
    data = torch.utils.data.TensorDataset(torch.arange(10.0))
    with instrumented(clock):
        loader = torch.utils.data.DataLoader(data, batch_size=4)
        batches = [b[0].tolist() for b in loader]
        assert len(iter(loader)) == 3
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert clock.seconds["data"] > 0 and sum(clock.seconds.values()) == clock.seconds["data"]


def test_phases_must_nest():
    clock = PhaseClock()
    clock.enter("student")
    with pytest.raises(RuntimeError, match="open phases are \\['student'\\]"):
        clock.exit("data")
    with pytest.raises(ValueError, match="Expected a phase in"):
        clock.enter("loading")


def test_runs_split_into_phases(fmnist_root, tmp_path, capsys, rendered):
    out = tmp_path / "out"
    record = phase_times.main(["--root", str(fmnist_root), "--methods", "replay", "m2kd", "bic",
                               "--out", str(out), *TINY])
    runs = {r["method"]: r for r in record["runs"]}
    for r in runs.values():
        assert sum(r["seconds"].values()) == pytest.approx(r["wall_s"])
        assert r["cpu_s"] > 0
        assert all(r["seconds"][p] >= 0 for p in PHASES if p != "other")
        assert r["seconds"]["data"] > 0 and r["seconds"]["student"] > 0
        assert r["seconds"]["evaluation"] > 0 and r["seconds"]["exemplars"] > 0
        assert 0 <= r["final_accuracy"] <= 1
    m2kd, replay, bic = runs["m2kd"]["seconds"], runs["replay"]["seconds"], runs["bic"]["seconds"]
    assert m2kd["teachers"] > 0 and m2kd["batchnorm"] > 0  # a snapshot teaches the second step
    assert replay["teachers"] == replay["batchnorm"] == replay["bias correction"] == 0
    assert bic["bias correction"] > 0 and bic["teachers"] == 0
    saved, page = rendered(out)  # the record the docs' m2kd-record directive renders
    assert saved["benchmark"] == "phase_times" and page == phase_times.markdown(record)
    assert saved["runs"] == json.loads(json.dumps(record["runs"]))
    sizes = (saved["train_images_per_class"], saved["test_images_per_class"], saved["epochs"])
    assert sizes == (6, 3, 1)
    table = capsys.readouterr().out
    assert "| m2kd |" in table and "| replay |" in table and "/ replay" in table


def test_ablation_variants_are_timed_after_the_methods(fmnist_root, capsys):
    variant = "defaults, teachers with running BN statistics"
    record = phase_times.main(["--root", str(fmnist_root), "--methods", "replay",
                               "--variants", variant, *TINY])
    names = [r["method"] for r in record["runs"]]
    assert names == ["replay", f"m2kd: {variant}"]
    assert record["runs"][1]["seconds"]["teachers"] > 0
    assert f"| m2kd: {variant} |" in capsys.readouterr().out


def test_the_table_gives_cpu_ratios_and_a_dash_for_records_without_cpu_times():
    seconds = {p: 0.0 for p in PHASES}
    record = dict(stream="5x2", train_images_per_class=6, test_images_per_class=3, epochs=1,
                  total_memory=None, exemplars=10, seed=0, backbone="cnn", threads=1,
                  baseline="replay", runs=[
                      dict(method="replay", wall_s=10.0, cpu_s=8.0, seconds=seconds),
                      dict(method="m2kd", wall_s=15.0, cpu_s=10.0, seconds=seconds)])
    rows = phase_times.markdown(record).splitlines()
    assert "| CPU s | CPU / |" in rows[2]
    assert rows[-1].startswith("| m2kd | 15.0 | 1.50 | 10.0 | 1.25 |")
    for r in record["runs"]:
        del r["cpu_s"]
    last = phase_times.markdown(record).splitlines()[-1]
    assert last.startswith("| m2kd | 15.0 | 1.50 | - | - |")
