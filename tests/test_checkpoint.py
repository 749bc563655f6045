"""Checkpoint and resume: killed runs end as uninterrupted ones; bad checkpoints are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.models import IncrementalClassifier
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from torch import nn

from avalanche_m2kd import M2KDStrategy
from avalanche_m2kd import checkpoint as ckpt
from avalanche_m2kd.checkpoint import CheckpointMismatchError, load_checkpoint, maybe_load_checkpoint, save_checkpoint
from avalanche_m2kd.data import split_digits

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "resumable.py"


def _evaluator():
    return EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        loggers=[],
    )


def _strategy(conv_net, **options):
    """A fresh seeded strategy on a conv net with a growing head (the hard case)."""
    torch.manual_seed(0)
    model = conv_net(head=IncrementalClassifier(16, initial_out_features=2))
    options = {"mem_size": 20, **options}
    return M2KDStrategy(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        criterion=nn.CrossEntropyLoss(), train_mb_size=32, train_epochs=2, eval_mb_size=256,
        evaluator=_evaluator(), **options,
    )


def _train(strategy, benchmark, experiences, path=None, save_after=None):
    for exp in experiences:
        strategy.train(exp)
        strategy.eval(benchmark.test_stream)  # every class: grows the head during eval
        if exp.current_experience == save_after:
            save_checkpoint(strategy, path)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"snapshot_mode": "full", "mem_size": 0},
        {"snapshot_mode": "pruned", "teacher_sample": 1},
    ],
    ids=["nested+buffer", "full+exemplar-free", "pruned+sampled"],
)
def test_resumed_run_equals_uninterrupted_run(digits_images, conv_net, tmp_path, options, identical):
    """Save after experience 2, resume in a fresh strategy: identical weights, store, metrics."""
    path = tmp_path / "run.ckpt"
    stream = digits_images.train_stream
    whole = _strategy(conv_net, **options)
    _train(whole, digits_images, stream, path, save_after=1)

    resumed = _strategy(conv_net, **options)
    resumed, start = maybe_load_checkpoint(resumed, path, stream)
    assert start == 2
    _train(resumed, digits_images, stream[start:])

    assert identical(whole.model.state_dict(), resumed.model.state_dict())
    assert identical(whole.snapshots.state_dict(), resumed.snapshots.state_dict())
    assert identical(whole.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"])
    assert whole.evaluator.get_all_metrics() == resumed.evaluator.get_all_metrics()
    assert whole.clock.train_iterations == resumed.clock.train_iterations


def test_grad_scaler_state_is_kept(digits, mlp, tmp_path):
    model = mlp()
    strategy = _fresh(model, mixed_precision=torch.float16)
    strategy.train(digits.train_stream[0])
    strategy.grad_scaler.update(1234.0)  # a scale no fresh scaler has
    save_checkpoint(strategy, tmp_path / "run.ckpt")
    resumed = _fresh(mlp(), mixed_precision=torch.float16)
    load_checkpoint(resumed, tmp_path / "run.ckpt", digits.train_stream)
    assert resumed.grad_scaler.get_scale() == 1234.0
    assert resumed.grad_scaler.state_dict() == strategy.grad_scaler.state_dict()


def test_sigkill_after_experience_2_of_5_then_resume_matches(tmp_path, load_example):
    """The issue's test: a real process killed with SIGKILL, resumed, same final metrics."""
    args = ["--epochs", "2"]
    whole = tmp_path / "whole.json"
    example = load_example("resumable")
    example.main([*args, "--checkpoint", str(tmp_path / "a.ckpt"), "--out", str(whole)])  # uninterrupted

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = [sys.executable, str(EXAMPLE), *args]

    killed = [*run, "--checkpoint", str(tmp_path / "b.ckpt"), "--out", str(tmp_path / "resumed.json")]
    child = subprocess.Popen(killed, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    for line in child.stdout:
        if line.startswith("experience 2 saved"):
            child.send_signal(signal.SIGKILL)  # while it trains experience 3
            break
    assert child.wait() == -signal.SIGKILL
    assert not (tmp_path / "resumed.json").exists()

    done = subprocess.run(killed, check=True, env=env, capture_output=True, text=True)
    resumed_after = int(done.stdout.split("resumed after experience ")[1].split()[0])
    assert 2 <= resumed_after < 4  # at most the experience in progress was lost
    a, b = json.loads(whole.read_text()), json.loads((tmp_path / "resumed.json").read_text())
    assert a.keys() == b.keys() and len(a) > 10
    assert all(abs(a[k] - b[k]) <= 1e-6 for k in a), {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_interrupted_write_leaves_the_last_good_checkpoint(digits, mlp, tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    model = mlp()
    strategy = M2KDStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                            train_mb_size=32, evaluator=_evaluator(), mem_size=10)
    strategy.train(digits.train_stream[0])
    save_checkpoint(strategy, path)
    good = path.read_bytes()
    strategy.train(digits.train_stream[1])

    def torn_save(obj, f):  # a crash half-way through writing
        f.write(b"\x80\x02partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(strategy, path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]  # no temporary left
    monkeypatch.undo()
    assert load_checkpoint(_fresh(mlp()), path, digits.train_stream) == 1  # the last good one
    (tmp_path / ".run.ckpt.killed.tmp").write_bytes(b"half")  # as a SIGKILL mid-write leaves
    save_checkpoint(strategy, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]
    assert load_checkpoint(_fresh(mlp()), path, digits.train_stream) == 2


@pytest.fixture
def saved(digits, mlp, tmp_path):
    """A checkpoint after one experience of a default M2KD run on flat digits."""
    model = mlp()
    strategy = M2KDStrategy(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                            train_mb_size=32, evaluator=_evaluator(), mem_size=10)
    strategy.train(digits.train_stream[0])
    save_checkpoint(strategy, tmp_path / "run.ckpt")
    return tmp_path / "run.ckpt"


def _fresh(mlp_model, **options):
    return M2KDStrategy(model=mlp_model, optimizer=torch.optim.SGD(mlp_model.parameters(), lr=0.05),
                        train_mb_size=32, evaluator=_evaluator(), **{"mem_size": 10, **options})


def test_checkpoint_from_other_options_is_refused(saved, digits, mlp):
    with pytest.raises(CheckpointMismatchError, match=r"mem_size=10 \(this strategy: 30\).*temperature=2.0"):
        load_checkpoint(_fresh(mlp(), mem_size=30, temperature=3.0), saved, digits.train_stream)


def test_checkpoint_from_other_stream_is_refused(saved, mlp):
    other = split_digits(5, seed=1)
    with pytest.raises(CheckpointMismatchError, match="trained on classes"):
        load_checkpoint(_fresh(mlp()), saved, other.train_stream)


def test_checkpoint_from_other_architecture_is_refused(saved, digits):
    wider = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    with pytest.raises(CheckpointMismatchError, match="architecture"):
        load_checkpoint(_fresh(wider), saved, digits.train_stream)


def test_checkpoint_from_other_strategy_class_is_refused(saved, digits, mlp):
    model = mlp()
    naive = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), criterion=nn.CrossEntropyLoss())
    with pytest.raises(CheckpointMismatchError, match="M2KDStrategy strategy, not a Naive"):
        load_checkpoint(naive, saved, digits.train_stream)


def test_refused_checkpoint_leaves_the_strategy_untouched(saved, mlp, identical):
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError):
        load_checkpoint(_fresh(model), saved, split_digits(5, seed=1).train_stream)
    assert identical(before, model.state_dict())


def test_not_a_checkpoint(tmp_path, digits, mlp):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(_fresh(mlp()), garbage, digits.train_stream)
    other = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not an avalanche-m2kd checkpoint"):
        load_checkpoint(_fresh(mlp()), other, digits.train_stream)


def test_missing_checkpoint_starts_from_zero(tmp_path, digits, mlp):
    strategy = _fresh(mlp())
    assert maybe_load_checkpoint(strategy, tmp_path / "none.ckpt", digits.train_stream) == (strategy, 0)


def test_buffer_that_cannot_be_saved_is_refused(digits, mlp, tmp_path):
    model = mlp()
    naive = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                  criterion=nn.CrossEntropyLoss(), plugins=[ReplayPlugin(20)], evaluator=_evaluator())
    naive.train(digits.train_stream[0])
    with pytest.raises(ValueError, match="ClassBalancedBuffer"):
        save_checkpoint(naive, tmp_path / "run.ckpt")
    assert not (tmp_path / "run.ckpt").exists()


def test_distillation_plugin_beside_naive_resumes(digits, mlp, tmp_path, identical):
    """A plugin with its own store, on Avalanche's Naive, resumes exactly too."""
    from avalanche_m2kd import MultiModelDistillationPlugin

    def build():
        torch.manual_seed(0)
        model = mlp()
        return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=32, evaluator=_evaluator(),
                     plugins=[MultiModelDistillationPlugin()])

    whole = build()
    for exp in digits.train_stream[:3]:
        whole.train(exp)
        if exp.current_experience == 1:
            save_checkpoint(whole, tmp_path / "run.ckpt")
    resumed, start = maybe_load_checkpoint(build(), tmp_path / "run.ckpt", digits.train_stream)
    assert start == 2 and len(resumed.plugins[0].store) == 2
    resumed.train(digits.train_stream[2])
    assert identical(whole.model.state_dict(), resumed.model.state_dict())
