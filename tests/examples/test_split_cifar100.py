"""examples/split_cifar100.py end to end on a tiny synthetic CIFAR-shaped set, and offline.

The example is loaded from its path (``examples/`` is not a package). The run uses
the real script, model (ResNet-32), strategy and evaluation; only the data is injected.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avalanche_m2kd.data.cifar import CIFAR100_CLASS_ORDERS
from avalanche_m2kd.data.digits import TensorClassificationDataset

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "split_cifar100.py"

# 2 experiences x 1 epoch of 30 images, 10 exemplars, no progress bars: a few seconds.
FAST = [
    "--n-experiences", "2", "--epochs", "1", "--batch-size", "16", "--eval-batch-size", "64",
    "--mem-size", "10", "--num-workers", "0", "--device", "cpu", "--quiet",
]


@pytest.fixture(scope="module")
def example(load_example):
    return load_example("split_cifar100")


def tiny_cifar(n_classes: int = 10, per_class: int = 6):
    """``per_class`` random 3x32x32 images of each class for training, 2 for testing."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n_classes).repeat(per_class)
    train = TensorClassificationDataset(torch.rand(len(y), 3, 32, 32, generator=g), y)
    yt = torch.arange(n_classes).repeat(2)
    test = TensorClassificationDataset(torch.rand(len(yt), 3, 32, 32, generator=g), yt)
    return train, test


def test_defaults_are_the_paper_style_run(example):
    args = example.build_parser().parse_args([])
    assert (args.n_experiences, args.first_exp_classes, args.class_order) == (10, None, "pycil")
    assert (args.mem_size, args.epochs, args.batch_size, args.lr) == (2000, 70, 128, 0.1)
    assert args.feature_layers == list(example.RESNET32_STAGES)
    assert example.lr_milestones(70) == [49, 63]


def test_resnet32_stage_names_exist(example):
    from avalanche.models import make_icarl_net

    names = dict(make_icarl_net(num_classes=100).named_modules())
    for stage, channels in zip(example.RESNET32_STAGES, (16, 32, 64), strict=True):
        assert names[stage][-1].direct[-1].num_features == channels  # last block's last BN


def test_end_to_end_on_injected_data(example, tmp_path, capsys):
    train, test = tiny_cifar()
    results = example.main(
        FAST + ["--class-order", "icarl", "--log-dir", str(tmp_path)],
        train_dataset=train, test_dataset=test,
    )
    accs = results["accuracy"]
    assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    assert results["average_incremental_accuracy"] == pytest.approx(sum(accs) / 2)
    assert results["final_accuracy"] == accs[-1]
    assert results["old_accuracy"][0] is None and results["old_accuracy"][1] is not None
    order = [c for c in CIFAR100_CLASS_ORDERS["icarl"] if c < 10]
    assert results["classes"] == [sorted(order[:5]), sorted(order[5:])]
    assert results["snapshot_bytes"] > 0
    assert results["exemplar_bytes"] == 10 * 3072
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["final_accuracy"] == results["final_accuracy"]
    assert "Top1_Acc_Stream" in (tmp_path / "log.txt").read_text()
    out = capsys.readouterr().out
    assert "step 2/2" in out and "average incremental accuracy" in out


def test_missing_data_exits_2_with_a_message(example, tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    root = tmp_path / "no-cifar-here"
    with pytest.raises(SystemExit) as info:
        example.main(["--data-root", str(root), "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert str(root) in err and "cifar-100-python" in err and "--data-root" in err
    assert "Traceback" not in err


def test_missing_data_as_a_script(tmp_path):
    """The real command line: status 2, the message, no traceback (no download tried)."""
    root = tmp_path / "no-cifar-here"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--data-root", str(root), "--no-download", "--quiet"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert str(root) in proc.stderr and "Traceback" not in proc.stderr


def test_wandb_offline(example, tmp_path, monkeypatch):
    """--wandb records an offline run through ``avalanche_m2kd.WandBLogger``."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    train, test = tiny_cifar()
    results = example.main(
        FAST + ["--wandb", "--log-dir", str(tmp_path)], train_dataset=train, test_dataset=test
    )
    assert len(results["accuracy"]) == 2
    assert list(tmp_path.rglob("*.wandb")), "no offline W&B run was written"
