"""The comparison harness end to end on a tiny Fashion-MNIST-shaped set (2 experiences, 1 epoch)."""

from __future__ import annotations

import json

import pytest

from benchmarks import compare, report, runs

TINY = ["--streams", "2x5", "--seeds", "0", "--epochs", "1", "--train-per-class", "6",
        "--test-per-class", "3", "--batch-size", "16", "--width", "4", "--preset", "quick"]


def test_prepare_command(fmnist_source, tmp_path, capsys):
    compare.main(["prepare", "--root", str(tmp_path), "--source", str(fmnist_source)])
    assert "ready" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        compare.main(["prepare", "--root", str(tmp_path / "r"), "--source", str(tmp_path / "none")])
    assert info.value.code == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_run_without_data_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        compare.main(["run", "--root", str(tmp_path), "--out", str(tmp_path / "out")] + TINY)
    assert info.value.code == 2 and "prepare" in capsys.readouterr().err


def test_run_and_report(fmnist_root, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", "--root", str(fmnist_root), "--out", str(out), "--budgets", "0", "10"] + TINY
    compare.main(args)
    records = compare.load_records(out)
    expected = {
        ("naive", 0),
        ("lwf", 0),
        ("lwf-la", 0),
        ("m2kd", 0),
        ("m2kd-full", 0),
        ("replay", 10),
        ("replay-la", 10),
        ("replay-la-0.75", 10),
        ("lwf", 10),
        ("lwf-la", 10),
        ("icarl", 10),
        ("er-ace", 10),
        ("der", 10),
        ("der-eval-mask", 10),
        ("bic", 10),
        ("bic-union", 10),
        ("m2kd", 10),
        ("m2kd-full", 10),
    }
    assert {(r["method"], r["budget"]) for r in records} == expected
    for r in records:
        assert len(r["accuracy"]) == len(r["matrix"]) == 2
        assert all(0.0 <= a <= 1.0 for a in r["accuracy"])
        assert r["old_accuracy"][0] is None and 0.0 <= r["old_accuracy"][1] <= 1.0
        assert r["matrix"][0][1] is None and r["matrix"][1][1] == r["new_accuracy"][1]
        assert r["average_incremental_accuracy"] == pytest.approx(sum(r["accuracy"]) / 2)
        assert r["wall_time_s"] > 0 and r["forgetting"][0] == 0.0
        assert r["exemplar_bytes"] == (10 * 784 if r["budget"] else 0)
        assert (
            r["class_order"] == "fixed"
            and r["classes"] == list(range(10))
            and r["total_memory"] is None
        )
        assert r["stored_total"] == sum(r["stored_bytes"].values())
    by = {(r["method"], r["budget"]): r for r in records}
    # fp32 logits of the fixed 10-unit head
    assert by[("der", 10)]["stored_bytes"]["logits"] == 10 * 10 * 4
    assert by[("bic", 10)]["stored_bytes"]["validation"] == 1 * 784  # int(0.1 * 10) held-out images
    assert by[("m2kd", 10)]["snapshot_bytes"] > 0 and by[("replay", 10)]["snapshot_bytes"] == 0
    assert by[("m2kd-full", 10)]["snapshot_bytes"] > by[("m2kd", 10)]["snapshot_bytes"]

    capsys.readouterr()
    compare.main(args)  # every record exists: nothing runs again
    assert "headline" not in capsys.readouterr().out.replace("done", "")

    compare.main(["report", "--out", str(out)])
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == len(expected)
    table = (out / "results.md").read_text()
    assert "| m2kd | 10 |" in table and "avg. incr. acc." in table and "fixed class order" in table
    hours = sum(r["wall_time_s"] for r in records) / 3600
    assert f"**Compute**: {len(records)} runs, {hours:.2f} h of wall time summed" in table
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_ablation_variants_run(fmnist_root, tmp_path):
    out = tmp_path / "out"
    compare.main(["run", "--root", str(fmnist_root), "--out", str(out), "--ablation",
                  "--ablation-budgets", "10"] + TINY)
    records = compare.load_records(out)
    assert {r["variant"] for r in records} == set(compare.ABLATION)
    assert all(r["kind"] == "ablation" and r["method"] == "m2kd" for r in records)


def test_bf16_variant_sets_the_distillation_plugins_teacher_dtype():
    import torch

    from avalanche_m2kd import MultiModelDistillationPlugin
    from benchmarks.methods import METHODS, Setting

    options = compare.ABLATION["all teachers, own, bf16 teachers"]
    setting = Setting(
        n_classes=10, experience_classes=(tuple(range(5)), tuple(range(5, 10))), width=4
    )
    strategy = METHODS["m2kd"].build(10, setting, options)
    (plugin,) = [p for p in strategy.plugins if isinstance(p, MultiModelDistillationPlugin)]
    # still JSON
    assert plugin.teacher_dtype is torch.bfloat16 and options["teacher_dtype"] == "bfloat16"


def test_forgetting_definition():
    matrix = [[0.9, None, None], [0.5, 0.8, None], [0.7, 0.2, 1.0]]
    assert runs.forgetting(matrix) == [0.0, pytest.approx(0.4), pytest.approx((0.2 + 0.6) / 2)]


def test_wandb_offline_run_holds_config_metrics_and_matrix(fmnist_root, tmp_path, monkeypatch):
    from tests.test_loggers import _one_run_file, _read_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    out = tmp_path / "out"
    compare.main(
        [
            "run", "--root", str(fmnist_root), "--out", str(out), "--methods", "m2kd", "--budgets",
            "10", "--wandb",
        ]
        + TINY
    )
    run = _read_run(_one_run_file(out))
    assert run["config"]["method"] == "m2kd" and run["config"]["budget"] == 10
    assert run["config"]["epochs"] == 1
    keys = set().union(*run["history"])
    assert {"accuracy", "old_accuracy", "new_accuracy", "accuracy_matrix/_type"} <= keys
    assert "Top1_Acc_Stream/eval_phase/test_stream/Task000" in keys  # Avalanche's own metrics
    steps = [(row["step"], row["accuracy"]) for row in run["history"] if "step" in row]
    record = compare.load_records(out)[0]
    assert steps == [(t + 1, pytest.approx(a)) for t, a in enumerate(record["accuracy"])]
    (table_file,) = out.rglob("accuracy_matrix*.table.json")
    table = json.loads(table_file.read_text())
    assert [row[1:] for row in table["data"]] == record["matrix"]


def test_class_order_permuted_is_reproducible_from_the_seed():
    import numpy as np

    assert compare.class_order("fixed", 3) == list(range(10))
    order = compare.class_order("permuted", 3)
    assert (
        order
        == compare.class_order("permuted", 3)
        == np.random.RandomState(3).permutation(10).tolist()
    )
    assert sorted(order) == list(range(10)) and order != compare.class_order("permuted", 4)
    assert compare.class_order("permuted", 1993, 100)[:3] == [68, 56, 78]  # PyCIL's CIFAR-100 order
    with pytest.raises(ValueError, match="class order"):
        compare.class_order("random", 0)


def test_total_memory_runs_stay_within_budget_and_report(fmnist_root, tmp_path, monkeypatch):
    from benchmarks import methods

    seeds = []
    monkeypatch.setattr(
        runs, "seed_everything", lambda s: (seeds.append(s), methods.seed_everything(s))
    )
    out = tmp_path / "out"
    setting = methods.Setting(
        n_classes=10, experience_classes=(tuple(range(5)), tuple(range(5, 10))), width=4
    )
    # m2kd-full's store: not in small
    small, large = methods.METHODS["m2kd-full"].fixed_bytes(setting) - 1, 200_000
    compare.main(
        [
            "run", "--root", str(fmnist_root), "--out", str(out), "--class-order", "permuted",
            "--total-memory", str(small), str(large), "--methods", "naive", "er-ace", "der", "bic",
            "lwf", "m2kd", "m2kd-full",
        ]
        + TINY
    )
    assert seeds and set(seeds) == {0}
    records = compare.load_records(out)
    # naive: none
    assert {r["method"] for r in records} == {"er-ace", "der", "bic", "lwf", "m2kd", "m2kd-full"}
    for r in records:
        assert r["kind"] == "memory" and r["class_order"] == "permuted"
        assert r["classes"] == compare.class_order("permuted", 0)
        if r.get("over_budget"):
            method = methods.METHODS[r["method"]]
            cheapest = r["predicted_fixed_bytes"] + method.exemplar_bytes(
                method.min_exemplars(), setting
            )
            assert r["total_memory"] == small and cheapest > small
            continue
        assert r["stored_total"] <= r["total_memory"]
        sizes = (r["train_images_per_class"], r["test_images_per_class"], r["epochs"])
        assert sizes == (6, 3, 1)
        besides = sum(
            v
            for k, v in r["stored_bytes"].items()
            if k not in ("exemplars", "logits", "validation")
        )
        # M2KD's store as the dry run measured it
        assert besides == r["predicted_fixed_bytes"], r["method"]
    by = {(r["method"], r["total_memory"]): r for r in records}
    assert by[("m2kd-full", small)].get("over_budget") and not by[("m2kd", small)].get(
        "over_budget"
    )
    assert by[("m2kd", large)]["stored_bytes"]["snapshots"] > 0
    # its store costs less than a model
    assert by[("m2kd", large)]["budget"] > by[("lwf", large)]["budget"]
    compare.main(["report", "--out", str(out)])
    table = (out / "results.md").read_text()
    assert (
        "equal total memory, stream 2x5, permuted class order" in table and "over budget" in table
    )
    assert f"| m2kd | {by[('m2kd', small)]['final_accuracy']:.3f} / " in table
    paired = table[table.index("Paired by seed"):]  # one seed: no interval, no verdict
    assert f"| er-ace | 1 | {by[('er-ace', large)]['final_accuracy']:.3f} | " in paired
    assert "one seed" in paired and "tie" not in paired
    assert (out / "memory.png").read_bytes()[:4] == b"\x89PNG" and not (
        out / "results.png"
    ).exists()


def test_default_total_memory_is_exemplars_plus_one_model():
    cfg = compare.parse(["run", "--total-memory"] + TINY)
    model = runs.backbone_bytes(cfg)
    assert cfg.total_memory == [200 * 784 + model, 1000 * 784 + model, 2000 * 784 + model]
    ablation = compare.parse(
        ["run", "--total-memory", "--ablation", "--variants", "defaults"] + TINY
    )
    assert ablation.total_memory == cfg.total_memory
    memory = compare.parse(["run", "--preset", "memory", "--total-memory"])
    model = runs.backbone_bytes(memory)
    assert memory.class_order == "permuted" and memory.train_per_class == 200
    assert memory.total_memory == [200 * 784 + model, 500 * 784 + model, 1000 * 784 + model]


def test_evidence_preset_is_the_issue_regime():
    cfg = compare.parse(["run", "--preset", "evidence", "--total-memory"])
    model = runs.backbone_bytes(cfg)
    assert (cfg.train_per_class, cfg.test_per_class, cfg.epochs) == (1000, 500, 8)
    assert cfg.lr_schedule == "cosine" and cfg.class_order == "permuted"
    assert cfg.streams == ["5x2", "2+1", "5+1"] and cfg.seeds == [0, 1, 2, 3, 4]
    # 1%, 3% and 5% of the 10,000 training images, plus one model
    assert cfg.total_memory == [100 * 784 + model, 300 * 784 + model, 500 * 784 + model]
    assert cfg.methods == ["m2kd", "replay-la-0.75", "er-ace", "der", "bic"]
    assert set(cfg.methods) <= set(compare.METHODS)
    # an explicit option wins over the preset; other presets keep every method
    assert compare.parse(["run", "--preset", "evidence", "--methods", "m2kd"]).methods == ["m2kd"]
    assert compare.parse(["run"]).methods == list(compare.METHODS)


def test_ablation_variants_at_equal_total_memory(fmnist_root, tmp_path):
    out = tmp_path / "out"
    total = 20 * 784 + runs.backbone_bytes(compare.parse(["run"] + TINY))
    compare.main(
        [
            "run", "--root", str(fmnist_root), "--out", str(out), "--ablation", "--total-memory",
            str(total), "--variants", "defaults", "nested, no feature term",
        ]
        + TINY
    )
    records = compare.load_records(out)
    assert {r["variant"] for r in records} == {"defaults", "nested, no feature term"}
    assert all(
        r["kind"] == "memory" and r["method"] == "m2kd" and r["total_memory"] == total
        for r in records
    )
    assert {r["options"].get("feat_weight") for r in records} == {None, 0.0}
    assert all(r["stored_total"] <= total for r in records)


def test_workers_run_side_by_side_and_write_the_records_one_process_writes(
    fmnist_root, tmp_path, capsys
):
    def run(out, *extra):
        compare.main(["run", "--root", str(fmnist_root), "--out", str(out), "--budgets", "10",
                      "--methods", "m2kd", "replay-la", *extra] + TINY)
        return {r["method"]: r for r in compare.load_records(out)}

    alone = run(tmp_path / "one")
    capsys.readouterr()
    side_by_side = run(tmp_path / "two", "--workers", "2")
    printed = capsys.readouterr().out
    assert "[1/2]" in printed and "[2/2]" in printed and "final" in printed
    assert set(side_by_side) == {"m2kd", "replay-la"}
    config = side_by_side["m2kd"]["m2kd_config"]  # what ran, defaults included
    assert config["logit_adjustment"] == 0.75 and config["mem_size"] == 10
    assert "m2kd_config" not in side_by_side["replay-la"]
    for method, record in alone.items():
        for key in ("accuracy", "matrix", "stored_bytes", "budget", "keep_searches"):
            assert side_by_side[method].get(key) == record.get(key), (method, key)
    with pytest.raises(SystemExit):
        compare.main(["run", "--workers", "0"])


def test_report_reads_records_without_the_new_fields(tmp_path):
    old = dict(
        method="replay",
        variant="replay",
        options={},
        budget=200,
        stream="5x2",
        seed=0,
        accuracy=[0.9, 0.7],
        old_accuracy=[None, 0.6],
        new_accuracy=[0.9, 0.8],
        forgetting=[0.0, 0.3],
        matrix=[[0.9, None], [0.6, 0.8]],
        average_incremental_accuracy=0.8,
        final_accuracy=0.7,
        final_old_accuracy=0.6,
        wall_time_s=1.0,
        train_time_s=1.0,
        snapshot_bytes=0,
        exemplar_bytes=200 * 784,
        model_bytes=1,
        kind="headline",
    )
    path = tmp_path / "runs" / "headline" / "5x2_replay_b200_s0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(old))
    compare.main(["report", "--out", str(tmp_path)])
    table = (tmp_path / "results.md").read_text()
    assert "**headline, stream 5x2, fixed class order**" in table
    assert "| replay | 200 | 1 | 0.800 | 0.700 |" in table and (tmp_path / "results.png").exists()


@pytest.mark.parametrize("method", ["replay", "m2kd", "bic"])
def test_cosine_schedule_anneals_each_experience_and_starts_again(fmnist_root, method):
    from avalanche.core import SupervisedPlugin

    class Rates(SupervisedPlugin):
        seen: list[float] = []

        def before_training_epoch(self, strategy, *args, **kwargs):
            self.seen.append(strategy.optimizer.param_groups[0]["lr"])

    rates = {}
    for schedule in ("constant", "cosine"):
        cfg = compare.parse(["run", "--root", str(fmnist_root), "--lr-schedule", schedule,
                             *TINY[:2], "--epochs", "2", *TINY[6:]])
        recorder = Rates()
        recorder.seen = []
        record = runs.run_one(method, 10, "2x5", 0, cfg, plugins=(recorder,))
        assert record["lr_schedule"] == schedule
        rates[schedule] = recorder.seen
    assert rates["constant"] == [0.05] * 4
    assert rates["cosine"] == pytest.approx([0.05, 0.025, 0.05, 0.025])  # T_max = 2 epochs
    with pytest.raises(ValueError, match="learning-rate schedule"):
        runs.lr_schedule_plugins("step", None, 2)


def test_memory_report_has_one_step_table_per_total_with_every_method():
    def record(method, budget, total, new, seed):
        return dict(
            kind="memory", method=method, variant=method, class_order="permuted",
            stream="5x2", seed=seed, total_memory=total, budget=budget,
            accuracy=[new[0], 0.7], old_accuracy=[None, 0.6], new_accuracy=new,
            forgetting=[0.0, 0.3], average_incremental_accuracy=0.8, final_accuracy=0.7,
            final_old_accuracy=0.6, wall_time_s=1.0, snapshot_bytes=0,
            exemplar_bytes=budget * 784, model_bytes=1, stored_total=total,
            stored_bytes=dict.fromkeys(("validation", "logits", "other"), 0),
        )

    records = [
        record("m2kd", 90, 1000, [0.9, 0.80], 0), record("m2kd", 90, 1000, [0.9, 0.70], 1),
        record("replay", 100, 1000, [0.9, 0.95], 0), record("m2kd", 190, 2000, [0.9, 0.5], 0),
    ]
    text = report.markdown(report.summarize(records))
    one = text.split("5x2, permuted class order, 1,000 bytes in all: old / new-class")[1]
    one = one.split("**")[1]
    # both methods of the total, each at the budget its bytes bought; seeds averaged
    assert "| m2kd | – / 0.90 | 0.60 / 0.75 |" in one
    assert "| replay | – / 0.90 | 0.60 / 0.95 |" in one
    assert "2,000 bytes in all: old / new-class" in text


def test_whole_pass_variant_builds_the_running_bn_variants_strategy():
    """Two names, one configuration: WHOLE's records and RUNNING_BN's are the same runs;
    SAMPLED is today's defaults."""
    from benchmarks.ablation import RUNNING_BN, SAMPLED, WHOLE
    from benchmarks.methods import METHODS, Setting

    setting = Setting(
        n_classes=10, experience_classes=(tuple(range(5)), tuple(range(5, 10))), width=4
    )

    def config(name):
        options = compare.ABLATION[name] if name else None
        return METHODS["m2kd"].build(10, setting, options).m2kd_config

    assert config(WHOLE) == config(RUNNING_BN)
    assert config(SAMPLED) == config(None) != config(WHOLE)
