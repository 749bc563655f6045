"""Checkpoint and resume: killed runs end as uninterrupted ones; bad checkpoints are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from avalanche.evaluation.metrics import Mean, accuracy_metrics, forgetting_metrics
from avalanche.models import IncrementalClassifier
from avalanche.training import Naive
from avalanche.training.plugins import (
    EarlyStoppingPlugin,
    EvaluationPlugin,
    EWCPlugin,
    LRSchedulerPlugin,
    LwFPlugin,
    ReplayPlugin,
    SupervisedPlugin,
)
from torch import nn

from avalanche_m2kd import M2KDStrategy
from avalanche_m2kd import checkpoint as ckpt
from avalanche_m2kd._avalanche import MEAN_FIELDS, PLUGIN_FIELDS
from avalanche_m2kd.checkpoint import (
    CheckpointMismatchError,
    load_checkpoint,
    maybe_load_checkpoint,
    save_checkpoint,
)
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


def _train(strategy, benchmark, experiences, path=None, save_after=None, **train_options):
    for exp in experiences:
        strategy.train(exp, **train_options)
        strategy.eval(benchmark.test_stream)  # every class: grows the head during eval
        if exp.current_experience == save_after:
            save_checkpoint(strategy, path)


def _whole_and_resumed(build, benchmark, path, n_experiences=5, save_after=1, **train_options):
    """A run of ``n_experiences`` saved after ``save_after``, and its resumption from that
    checkpoint into a freshly built strategy: ``(whole, resumed)`` at the end."""
    stream = benchmark.train_stream
    whole = build()
    _train(whole, benchmark, stream[:n_experiences], path, save_after, **train_options)
    resumed, start = maybe_load_checkpoint(build(), path, stream)
    assert start == save_after + 1
    _train(resumed, benchmark, stream[start:n_experiences], **train_options)
    return whole, resumed


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"snapshot_mode": "full", "mem_size": 0},
        {"snapshot_mode": "pruned", "teacher_sample": 1},
    ],
    ids=["nested+buffer", "full+exemplar-free", "pruned+sampled"],
)
def test_resumed_run_equals_uninterrupted_run(
    digits_images, conv_net, tmp_path, options, identical
):
    """Save after experience 2, resume in a fresh strategy: identical weights, store, metrics."""
    whole, resumed = _whole_and_resumed(lambda: _strategy(conv_net, **options), digits_images,
                                        tmp_path / "run.ckpt")
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
    # uninterrupted
    example.main([*args, "--checkpoint", str(tmp_path / "a.ckpt"), "--out", str(whole)])

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = [sys.executable, str(EXAMPLE), *args]

    killed = [*run, "--checkpoint", str(tmp_path / "b.ckpt"),
              "--out", str(tmp_path / "resumed.json")]
    child = subprocess.Popen(killed, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=env)
    assert child.stdout is not None
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
    with pytest.raises(CheckpointMismatchError,
                       match=r"mem_size=10 \(this strategy: 30\).*temperature=2.0"):
        load_checkpoint(_fresh(mlp(), mem_size=30, temperature=3.0), saved, digits.train_stream)


def test_checkpoint_from_other_stream_is_refused(saved, mlp):
    other = split_digits(5, seed=1)
    with pytest.raises(CheckpointMismatchError, match="trained on classes"):
        load_checkpoint(_fresh(mlp()), saved, other.train_stream)


def test_checkpoint_from_other_architecture_is_refused(saved, digits):
    wider = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    with pytest.raises(CheckpointMismatchError, match="architecture"):
        load_checkpoint(_fresh(wider), saved, digits.train_stream)


def test_checkpoint_from_other_strategy_class_is_refused(saved, digits, mlp):
    model = mlp()
    naive = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                  criterion=nn.CrossEntropyLoss())
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
    loaded = maybe_load_checkpoint(strategy, tmp_path / "none.ckpt", digits.train_stream)
    assert loaded == (strategy, 0)


def test_buffer_that_cannot_be_saved_is_refused(digits, mlp, tmp_path):
    model = mlp()
    naive = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                  criterion=nn.CrossEntropyLoss(), plugins=[ReplayPlugin(20)],
                  evaluator=_evaluator())
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
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return Naive(model=model, optimizer=optimizer,
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


# ------------------------------------------------- other libraries' plugins
def _with_plugins(mlp, *make_plugins, **options):
    """A fresh seeded M2KD strategy on flat digits with plugins ``make(optimizer)``."""
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    options = {"train_epochs": 2, "mem_size": 10, **options}
    return M2KDStrategy(model=model, optimizer=optimizer, train_mb_size=32, eval_mb_size=256,
                        evaluator=_evaluator(), plugins=[make(optimizer) for make in make_plugins],
                        **options)


def _cosine(optimizer, **options):
    """The issue's plugin: cosine over all 4 experiences x 2 epochs, never reset."""
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=8)
    return LRSchedulerPlugin(schedule, reset_scheduler=False, reset_lr=False, **options)


def _plateau(optimizer):
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    return LRSchedulerPlugin(schedule, reset_scheduler=False, reset_lr=False, metric="train_loss")


@pytest.mark.parametrize("make_plugin", [_cosine, _plateau],
                         ids=["cosine", "plateau-on-train-loss"])
def test_lr_scheduler_plugin_state_resumes_exactly(digits, mlp, tmp_path, identical, make_plugin):
    """Saved after experience 2 of 4, resumed in a fresh strategy: same LR, weights, metrics."""
    whole, resumed = _whole_and_resumed(lambda: _with_plugins(mlp, make_plugin), digits,
                                        tmp_path / "run.ckpt", n_experiences=4)
    lr = whole.optimizer.param_groups[0]["lr"]
    assert lr < 0.05  # the schedule moved the LR
    if make_plugin is _cosine:
        assert lr == 0.0  # the end of the cosine (a resumed run restarting it ended at 0.0125)
    assert resumed.optimizer.param_groups[0]["lr"] == lr
    whole_schedule, resumed_schedule = (
        next(p.scheduler for p in s.plugins if isinstance(p, LRSchedulerPlugin))
        for s in (whole, resumed)
    )
    assert identical(whole_schedule.state_dict(), resumed_schedule.state_dict())
    assert identical(whole.model.state_dict(), resumed.model.state_dict())
    assert whole.evaluator.get_all_metrics() == resumed.evaluator.get_all_metrics()


def test_early_stopping_plugin_resumes_exactly(digits, mlp, tmp_path, identical):
    """Early stopping on the test stream's accuracy, evaluated every epoch: it stops some
    experiences early, and the resumed run stops at the same epochs with the same weights."""
    epochs: dict[int, list[int]] = {}

    class CountEpochs(SupervisedPlugin):
        def after_training_exp(self, strategy, **kwargs):
            epochs.setdefault(id(strategy), []).append(strategy.clock.train_exp_epochs)

    def build():
        stopper = EarlyStoppingPlugin(patience=1, val_stream_name="test_stream")
        return _with_plugins(mlp, lambda _: stopper, lambda _: CountEpochs(), train_epochs=6,
                             eval_every=1)

    whole, resumed = _whole_and_resumed(build, digits, tmp_path / "run.ckpt", n_experiences=4,
                                        eval_streams=[digits.test_stream])
    whole_epochs, resumed_epochs = epochs[id(whole)], epochs[id(resumed)]
    assert min(whole_epochs) < 6  # it did stop early
    assert resumed_epochs == whole_epochs[2:]
    assert identical(whole.model.state_dict(), resumed.model.state_dict())
    assert whole.evaluator.get_all_metrics() == resumed.evaluator.get_all_metrics()


def test_lr_scheduler_plugin_with_other_options_is_refused(digits, mlp, tmp_path, identical):
    strategy = _with_plugins(mlp, _cosine)
    strategy.train(digits.train_stream[0])
    save_checkpoint(strategy, tmp_path / "run.ckpt")

    with pytest.raises(CheckpointMismatchError,
                       match=r"LRSchedulerPlugin was built with reset_lr=False \(this one: True\)"):
        load_checkpoint(
            _with_plugins(
                mlp, lambda o: LRSchedulerPlugin(_cosine(o).scheduler, reset_scheduler=False)
            ),
            tmp_path / "run.ckpt", digits.train_stream,
        )

    def step(optimizer):
        return LRSchedulerPlugin(torch.optim.lr_scheduler.StepLR(optimizer, 2),
                                 reset_scheduler=False, reset_lr=False)

    other = _with_plugins(mlp, step)
    before = {k: v.clone() for k, v in other.model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError,
                       match="scheduler a CosineAnnealingLR .this one: a StepLR."):
        load_checkpoint(other, tmp_path / "run.ckpt", digits.train_stream)
    assert identical(before, other.model.state_dict())


class _Stateless(SupervisedPlugin):
    """A user plugin with options only: nothing to save, nothing refused."""

    def __init__(self):
        super().__init__()
        self.every, self.names, self.fn = 2, ["a", "b"], torch.relu


@pytest.mark.parametrize(
    ("make_plugin", "attribute"),
    [(lambda: LwFPlugin(), r"lwf\.prev_model` \(Sequential\)"),  # a module in an object
     # in dicts of objects
     (lambda: EWCPlugin(ewc_lambda=1.0), r"saved_params\[0\]\[.*\(Tensor\)")],
    ids=["LwFPlugin", "EWCPlugin"],
)
def test_stateful_plugin_without_state_dict_is_refused(
    digits, mlp, tmp_path, make_plugin, attribute
):
    model = mlp()
    naive = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                  criterion=nn.CrossEntropyLoss(), plugins=[_Stateless(), make_plugin()],
                  evaluator=_evaluator())
    save_checkpoint(naive, tmp_path / "before.ckpt")  # nothing kept yet: saved
    naive.train(digits.train_stream[0])
    with pytest.raises(ValueError, match=f"keeps state that cannot be checkpointed .its attribute "
                                         f"`{attribute}.*state_dict"):
        save_checkpoint(naive, tmp_path / "run.ckpt")
    assert not (tmp_path / "run.ckpt").exists()


def _avalanche_plugin_instances() -> dict[type, Any]:
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    return {LRSchedulerPlugin: _cosine(optimizer),
            EarlyStoppingPlugin: EarlyStoppingPlugin(2, "test_stream")}


def test_avalanche_plugin_attributes_are_pinned():
    """The table of Avalanche plugin attributes matches Avalanche's classes: an upgrade
    that adds, renames or stops resetting an attribute fails here, not in a resumed run."""
    instances = _avalanche_plugin_instances()
    assert set(PLUGIN_FIELDS) == set(instances)
    for cls, plugin in instances.items():
        fields = PLUGIN_FIELDS[cls]
        pinned = fields.saved + fields.compared + fields.unsaved
        assert sorted(vars(plugin)) == sorted(pinned), cls.__name__
    assert isinstance(instances[LRSchedulerPlugin].rolling_metric, Mean)
    assert sorted(vars(Mean())) == sorted(MEAN_FIELDS)

    stopper = instances[EarlyStoppingPlugin]  # its unsaved best_* are reset at each experience
    stopper.best_state, stopper.best_val, stopper.best_step = {"w": torch.ones(1)}, 0.5, 3
    stopper.before_training_exp(strategy=None)
    assert (stopper.best_state, stopper.best_val, stopper.best_step) == (None, None, None)


def test_head_grown_by_eval_before_training_resumes(digits_images, conv_net, tmp_path, identical):
    """An eval before the first train grows the head, so Avalanche's first make_optimizer
    keeps the pre-growth head tensors in the optimizer beside the new ones (found by
    tests/test_properties.py): the resumed optimizer has the same slots."""
    builds = iter([True, False])  # a script evaluates first only when it starts from scratch

    def build():
        strategy = _strategy(conv_net)
        if next(builds):
            strategy.eval(digits_images.test_stream[:2])  # 4 classes: the 2-unit head grows to 4
        return strategy

    whole, resumed = _whole_and_resumed(build, digits_images, tmp_path / "run.ckpt",
                                        n_experiences=3)
    slots = [len(g["params"]) for g in whole.optimizer.param_groups]
    assert slots == [len(list(whole.model.parameters())) + 2]  # the stale head weight and bias
    assert [len(g["params"]) for g in resumed.optimizer.param_groups] == slots
    assert identical(whole.model.state_dict(), resumed.model.state_dict())
    assert identical(whole.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"])
    assert whole.evaluator.get_all_metrics() == resumed.evaluator.get_all_metrics()


# ------------------------------------------------------------------ format versions
FORMAT1 = ROOT / "tests" / "data" / "checkpoint_format1.pt"


#: 0.1.0's defaults that later releases changed, which the checkpoint's configuration holds.
DEFAULTS_01 = dict(prune_ratio="fair", restore_released_at="next_experience", feat_weight=1.0,
                   logit_adjustment=1.0, teacher_bn="batch", recalibrate_samples=None)


def _format1_strategy(**changes):
    """The strategy ``tests/data/checkpoint_format1.pt`` was saved from, after 2 experiences of
    ``split_digits(5, seed=0)`` with ``strategy.eval(test_stream[:2])`` after each, by
    avalanche-m2kd 0.1.0's code (commit 28567d1, ``git archive 28567d1 avalanche_m2kd``);
    ``changes`` replace or drop (``None``) its options."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    dropped = {k for k, v in changes.items() if v is None}
    options = {k: v for k, v in {**DEFAULTS_01, **changes}.items() if k not in dropped}
    return M2KDStrategy(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                        train_mb_size=32,
                        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
                        mem_size=10, feature_layers=["0"], teacher_dtype=torch.bfloat16,
                        temperature=3.0, **options)


def test_checkpoint_written_before_the_option_objects_loads_and_resumes(digits):
    """A format-1 checkpoint of 0.1.0 (hand-built ``m2kd_config``) loads into today's
    strategy, holds the weights today's code trains to, and the run goes on."""
    assert ckpt.FORMAT_VERSION == 1
    whole = _format1_strategy()
    for exp in digits.train_stream[:2]:
        whole.train(exp)
        whole.eval(digits.test_stream[:2])
    resumed = _format1_strategy()
    assert load_checkpoint(resumed, FORMAT1, digits.train_stream) == 2
    assert len(resumed.snapshots) == 2
    # same training (to BLAS rounding elsewhere)
    for name, value in whole.model.state_dict().items():
        assert torch.allclose(value, resumed.model.state_dict()[name], atol=1e-5), name
    resumed.train(digits.train_stream[2])
    assert len(resumed.snapshots) == 3


def test_a_checkpoint_of_0_1_reads_its_default_prune_ratio_as_fair(digits):
    """0.1.0 wrote ``prune_ratio=None`` for its default, ``"fair"``; today ``None`` is a
    ``FaithfulKeep``, so resuming that checkpoint without ``prune_ratio="fair"`` is
    refused, naming it, instead of going on with another schedule."""
    strategy = _format1_strategy(prune_ratio=None)
    with pytest.raises(ckpt.CheckpointMismatchError, match=r"prune_ratio='fair' \(this strategy: "
                       r"\{'faithful_keep'"):
        load_checkpoint(strategy, FORMAT1, digits.train_stream)


def test_a_checkpoint_with_the_old_logit_adjustment_is_refused_naming_it(digits):
    """0.1.0's ``logit_adjustment`` was 1; resumed under today's default (0.75) the run
    would go on with another criterion: refused, naming the option and both values."""
    with pytest.raises(ckpt.CheckpointMismatchError,
                       match=r"logit_adjustment=1\.0 \(this strategy: 0\.75\)"):
        load_checkpoint(_format1_strategy(logit_adjustment=None), FORMAT1, digits.train_stream)


def test_a_checkpoint_measured_on_the_whole_pass_is_refused_under_todays_sampling(digits):
    """Before 0.3 every BatchNorm re-estimation used the whole pass; a config without
    ``recalibrate_samples`` is read as ``None``, so resuming it under today's default
    (512) is refused, naming the option."""
    with pytest.raises(ckpt.CheckpointMismatchError,
                       match=r"recalibrate_samples=None \(this strategy: 512\)"):
        load_checkpoint(_format1_strategy(recalibrate_samples=512), FORMAT1,
                        digits.train_stream)


@pytest.mark.parametrize("version, why", [("2", "newer avalanche-m2kd"),
                                          ("0", "the avalanche-m2kd that wrote it")])
def test_checkpoint_of_another_format_version_is_refused_naming_both(
    saved, digits, mlp, tmp_path, version, why
):
    state = torch.load(saved, weights_only=True)
    state["format"] = f"avalanche_m2kd.checkpoint/{version}"
    other = tmp_path / f"v{version}.ckpt"
    torch.save(state, other)
    strategy = _fresh(mlp())
    before = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    with pytest.raises(ckpt.CheckpointFormatError,
                       match=rf"format version '{version}', but this avalanche-m2kd "
                       rf"reads format version 1 only: .*{why}"):
        load_checkpoint(strategy, other, digits.train_stream)
    assert all(torch.equal(before[k], v) for k, v in strategy.model.state_dict().items())
    assert isinstance(ckpt.CheckpointFormatError("x"), ValueError)  # caught where ValueError was
