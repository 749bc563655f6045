"""Property-based tests: M2KD over the streams, memories, models and plugins users meet.

Each example draws a class-incremental stream (2-6 experiences of 1-4 classes in a
random order, 1-5 training samples per class), an exemplar memory (0, fewer slots than
classes, between, more than the data), a small MLP or CNN (BatchNorm or not, bias-free
convolutions, ``channels_last``) with an ``nn.Linear`` head sized for all classes or
Avalanche's ``IncrementalClassifier``, a snapshot mode, an optimizer and Avalanche's
``LRSchedulerPlugin`` / ``EarlyStoppingPlugin``; trains and evaluates it to the end;
and checks what must hold for every such run (:func:`test_every_run_keeps_the_invariants`).

Profiles (registered in ``tests/conftest.py``): the default one is fixed-seed and
small; ``pytest tests/test_properties.py --hypothesis-profile=thorough`` runs many
examples. A failure prints the drawn :class:`Run`, which rebuilds the example alone
with :func:`check_run`.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics, loss_metrics
from avalanche.models import IncrementalClassifier
from avalanche.training.plugins import (
    EarlyStoppingPlugin,
    EvaluationPlugin,
    LRSchedulerPlugin,
    SupervisedPlugin,
)
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from torch import nn

from avalanche_m2kd import M2KDStrategy
from avalanche_m2kd.checkpoint import load_checkpoint, save_checkpoint
from avalanche_m2kd.data import TensorClassificationDataset

# By path: Avalanche installs a top-level ``tests`` package that ``import tests.…`` may find.
_spec = importlib.util.spec_from_file_location(
    "m2kd_test_exemplars", Path(__file__).with_name("test_exemplars.py")
)
_exemplar_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_exemplar_tests)
expected_group_sizes = _exemplar_tests.expected_group_sizes

MODES = ("nested", "pruned", "full")
WIDTH = 6  # units of the hidden layers and of the head's input
PRUNED_DENSITY = 0.5  # M2KDStrategy's default prune_ratio in "pruned" mode is 0.5


@dataclass(frozen=True)
class Run:
    """One drawn example: everything needed to rebuild it."""

    classes_per_exp: tuple[int, ...]
    class_order: tuple[int, ...]
    samples: tuple[int, ...]  # training samples of class c
    mem_size: int
    model: str  # "mlp" or "cnn"
    batch_norm: bool
    conv_bias: bool
    channels_last: bool
    head: str  # "linear" (sized for all classes) or "incremental"
    deep_features: bool  # a feature level inside the body besides the head's input
    mode: str
    epochs: int
    post_prune_epochs: int | None
    optimizer: str
    lr_scheduler: tuple[bool, bool] | None  # (reset_scheduler, reset_lr)
    early_stopping: bool
    eval_first: bool  # a baseline evaluation on the whole test stream before training
    eval_all: bool  # evaluate on the whole test stream after each experience
    batch: int
    save_after: int  # the experience after which a checkpoint is saved
    seed: int

    @property
    def n_classes(self) -> int:
        return sum(self.classes_per_exp)


@st.composite
def runs(draw, before_training: bool) -> Run:
    """A :class:`Run`; with ``before_training``, one that evaluates before its first
    training: Avalanche's ``EarlyStoppingPlugin`` (its periodic evaluation starts
    with one) and / or a baseline evaluation of the whole test stream."""
    n_exp = draw(st.integers(2, 6))
    per_exp = tuple(draw(st.lists(st.integers(1, 4), min_size=n_exp, max_size=n_exp)))
    n_classes = sum(per_exp)
    samples = tuple(draw(st.lists(st.integers(1, 5), min_size=n_classes, max_size=n_classes)))
    memory = draw(st.sampled_from(["zero", "below_classes", "between", "above_data"]))
    event(f"memory: {memory}")
    mem_size = {
        "zero": lambda: 0,
        "below_classes": lambda: draw(st.integers(1, n_classes - 1)),
        "between": lambda: draw(st.integers(n_classes, max(n_classes, sum(samples)))),
        "above_data": lambda: draw(st.integers(sum(samples) + 1, sum(samples) + 10)),
    }[memory]()
    model = draw(st.sampled_from(["mlp", "cnn"]))
    cnn = model == "cnn"
    mode = draw(st.sampled_from(MODES))
    epochs = draw(st.integers(1, 3))
    early_stopping = before_training and draw(st.booleans())
    return Run(
        classes_per_exp=per_exp,
        class_order=tuple(draw(st.permutations(range(n_classes)))),
        samples=samples,
        mem_size=mem_size,
        model=model,
        batch_norm=cnn and draw(st.booleans()),
        conv_bias=cnn and draw(st.booleans()),
        channels_last=cnn and draw(st.booleans()),
        head=draw(st.sampled_from(["linear", "incremental"])),
        deep_features=draw(st.booleans()),
        mode=mode,
        epochs=epochs,
        post_prune_epochs=draw(st.none() | st.integers(0, epochs - 1))
        if mode == "nested"
        else None,
        optimizer=draw(st.sampled_from(["sgd", "momentum", "adam"])),
        lr_scheduler=draw(st.none() | st.tuples(st.booleans(), st.booleans())),
        early_stopping=early_stopping,
        eval_first=before_training and (not early_stopping or draw(st.booleans())),
        eval_all=draw(st.booleans()),
        batch=draw(st.integers(1, 8)),
        save_after=draw(st.integers(0, n_exp - 2)),
        seed=draw(st.integers(0, 2**16)),
    )


# ------------------------------------------------------------------ building
def make_benchmark(run: Run):
    """The stream and a probe batch (two test samples of every class)."""
    g = torch.Generator().manual_seed(run.seed)
    shape = (2, 5, 5) if run.model == "cnn" else (5,)
    centres = torch.randn(run.n_classes, *shape, generator=g)
    y = torch.tensor([c for c in range(run.n_classes) for _ in range(run.samples[c])])
    x = centres[y] + 0.5 * torch.randn(len(y), *shape, generator=g)
    test_y = torch.arange(run.n_classes).repeat(2)
    test_x = centres[test_y] + 0.5 * torch.randn(len(test_y), *shape, generator=g)
    benchmark = nc_benchmark(
        TensorClassificationDataset(x, y), TensorClassificationDataset(test_x, test_y),
        n_experiences=len(run.classes_per_exp), task_labels=False,
        fixed_class_order=list(run.class_order),
        per_exp_classes=dict(enumerate(run.classes_per_exp)),
    )
    return benchmark, test_x


def make_model(run: Run) -> nn.Module:
    if run.model == "mlp":
        body = nn.Sequential(OrderedDict(
            fc1=nn.Linear(5, WIDTH), relu1=nn.ReLU(), fc2=nn.Linear(WIDTH, WIDTH), relu2=nn.ReLU(),
        ))
    else:
        layers = OrderedDict(conv1=nn.Conv2d(2, 4, 3, padding=1, bias=run.conv_bias))
        if run.batch_norm:
            layers["bn1"] = nn.BatchNorm2d(4)
        layers["relu1"] = nn.ReLU()
        layers["conv2"] = nn.Conv2d(4, WIDTH, 3, padding=1, bias=run.conv_bias)
        if run.batch_norm:
            layers["bn2"] = nn.BatchNorm2d(WIDTH)
        layers.update(relu2=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten())
        body = nn.Sequential(layers)
    if run.head == "linear":
        head = nn.Linear(WIDTH, run.n_classes)
    else:
        head = IncrementalClassifier(WIDTH, initial_out_features=2)
    model = nn.Sequential(OrderedDict(body=body, head=head))
    return model.to(memory_format=torch.channels_last) if run.channels_last else model


class EpochCounter(SupervisedPlugin):
    """Epochs trained in the last experience (early stopping ends one sooner)."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs = 0

    def before_training_exp(self, strategy, *args, **kwargs):
        self.epochs = 0

    def after_training_epoch(self, strategy, *args, **kwargs):
        self.epochs += 1


def make_strategy(run: Run) -> tuple[M2KDStrategy, EpochCounter]:
    torch.manual_seed(run.seed)
    model = make_model(run)
    optimizer = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.05),
        "momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        "adam": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-4),
    }[run.optimizer](model.parameters())
    counter = EpochCounter()
    plugins: list[SupervisedPlugin] = [counter]
    if run.lr_scheduler is not None:
        reset_scheduler, reset_lr = run.lr_scheduler
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        plugins.append(
            LRSchedulerPlugin(scheduler, reset_scheduler=reset_scheduler, reset_lr=reset_lr)
        )
    if run.early_stopping:
        plugins.append(EarlyStoppingPlugin(patience=1, val_stream_name="test_stream"))
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True), loss_metrics(stream=True),
        forgetting_metrics(experience=True, stream=True), loggers=[],
    )
    strategy = M2KDStrategy(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        train_mb_size=run.batch,
        train_epochs=run.epochs,
        eval_mb_size=64,
        plugins=plugins,
        evaluator=evaluator,
        eval_every=1 if run.early_stopping else -1,
        mem_size=run.mem_size,
        snapshot_mode=run.mode,
        post_prune_epochs=run.post_prune_epochs,
        # the recorder reads the live model after each experience as the snapshot, which
        # it is only while the released weights wait for the next experience
        restore_released_at="next_experience",
        feature_layers=["body.relu1", "head:input"] if run.deep_features else None,
    )
    return strategy, counter


def train(run: Run, strategy, benchmark, experiences, after_train=None, save_to=None) -> None:
    """Train and evaluate each experience as a user script does."""
    for exp in experiences:
        k = exp.current_experience
        seen = benchmark.test_stream[: k + 1]
        strategy.train(exp, **({"eval_streams": [seen]} if run.early_stopping else {}))
        if after_train is not None:
            after_train(k)
        strategy.eval(benchmark.test_stream if run.eval_all else seen)
        if save_to is not None and k == run.save_after:
            save_checkpoint(strategy, save_to)


def buffer_of(strategy):
    return next((p.storage_policy for p in strategy.plugins if hasattr(p, "storage_policy")), None)


# ---------------------------------------------------------------- invariants
def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def prunable_names(model: nn.Module) -> list[str]:
    """Conv/linear weights outside the head (``head``), as the store's docstring says."""
    return [
        f"{n}.weight" for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not n.startswith("head")
    ]


def snapshot_bytes(mode: str, model: nn.Module, n_units: int, n_seen: int) -> int:
    """What one snapshot adds to ``SnapshotStore.nbytes()``, from its docstring."""
    prunable, total = prunable_names(model), 0
    for name, t in model.state_dict().items():
        if mode == "full":
            total += _bytes(t)
        elif name in prunable:
            if mode == "pruned":  # bit mask + the kept fp32 values
                total += (
                    math.ceil(t.numel() / 8)
                    + int(round(PRUNED_DENSITY * t.numel())) * t.element_size()
                )
        elif (
            mode == "nested" and name.startswith("head.") and t.dim() >= 1 and t.shape[0] == n_units
        ):
            total += n_seen * math.prod(t.shape[1:]) * t.element_size()  # rows of seen classes
        else:
            total += _bytes(t)
    return total


def owner_bytes(model: nn.Module, n_snapshots: int) -> int:
    """``nested``: ``ceil(numel * ceil(log2(T + 1)) / 8)`` bytes per prunable layer."""
    bits = math.ceil(math.log2(n_snapshots + 1))
    params = dict(model.named_parameters())
    return sum(math.ceil(params[n].numel() * bits / 8) for n in prunable_names(model))


class Record:
    """What the uninterrupted run looked like at each experience boundary."""

    def __init__(self, run: Run, strategy, benchmark, probe: torch.Tensor) -> None:
        self.run, self.strategy, self.benchmark, self.probe = run, strategy, benchmark, probe
        self.outputs: list[torch.Tensor] = []
        self.weights: list[dict[str, torch.Tensor]] = []
        self.owners: list[dict[str, torch.Tensor]] = []
        self.snapshot_bytes = 0
        self.group_sizes: dict[int, int] = {}
        self.short_class = False

    @torch.no_grad()
    def __call__(self, k: int) -> None:
        strategy, model, store = self.strategy, self.strategy.model, self.strategy.snapshots
        was_training = model.training
        model.eval()
        self.outputs.append(model(self.probe).clone())
        model.train(was_training)
        self.weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
        if self.run.mode == "nested":
            self.owners.append(store.owners)
        assert len(store) == k + 1

        seen = {
            int(c)
            for e in self.benchmark.train_stream[: k + 1]
            for c in e.classes_in_this_experience
        }
        self.snapshot_bytes += snapshot_bytes(
            self.run.mode, model, self.outputs[-1].shape[1], len(seen)
        )
        expected = self.snapshot_bytes + (
            owner_bytes(model, k + 1) if self.run.mode == "nested" else 0
        )
        assert store.nbytes() == expected, (
            f"nbytes after experience {k}: {store.nbytes()} != {expected}"
        )

        buffer = buffer_of(strategy)
        if buffer is None:
            assert self.run.mem_size == 0
            return
        counts = dict(enumerate(self.run.samples))
        sizes = expected_group_sizes(
            self.run.mem_size, buffer._seen_order, counts, self.group_sizes
        )
        actual = {int(c): len(g.buffer) for c, g in buffer.buffer_groups.items()}
        assert actual == sizes, f"buffer after experience {k}: {actual}, share rule: {sizes}"
        assert len(buffer.buffer) <= self.run.mem_size
        for c, group in buffer.buffer_groups.items():
            assert all(int(t) == c for t in group.buffer.targets)
        share = expected_group_sizes(self.run.mem_size, buffer._seen_order, counts, {})
        full_share = expected_group_sizes(
            self.run.mem_size, buffer._seen_order, {c: 10**6 for c in counts}, {}
        )
        self.short_class |= any(share[c] < full_share[c] for c in share)
        self.group_sizes = sizes


def check_teachers(record: Record) -> None:
    """Teacher k's eval outputs equal the model's at the end of experience k, bit for bit
    (``nested``: on the classes seen by then; the others are 0, or the incremental
    head's mask value), after every later experience."""
    store, run = record.strategy.snapshots, record.run
    for k, expected in enumerate(record.outputs):
        out = store.teacher(k)(record.probe)
        assert out.shape == expected.shape, f"teacher {k}: shape {out.shape} != {expected.shape}"
        if run.mode == "full":
            assert torch.equal(out, expected), f"teacher {k} differs from snapshot {k}"
            continue
        seen = sorted({c for classes in store.classes[: k + 1] for c in classes})
        assert torch.equal(out[:, seen], expected[:, seen]), (
            f"teacher {k} differs on its classes {seen}"
        )
        unseen = [c for c in range(out.shape[1]) if c not in seen]
        fill = -1000.0 if run.head == "incremental" else 0.0
        assert bool((out[:, unseen] == fill).all()), f"teacher {k}: unseen classes not {fill}"


def check_owned_weights(record: Record) -> None:
    """``nested``: weights owned at experience k keep their owner and value to the end."""
    store, params = record.strategy.snapshots, dict(record.strategy.model.named_parameters())
    final = store.owners
    for k, (owners, weights) in enumerate(zip(record.owners, record.weights, strict=True)):
        for name, owner in owners.items():
            owned = owner != 0
            assert torch.equal(final[name][owned], owner[owned]), (
                f"{name}: owners of experience {k} changed"
            )
            assert torch.equal(params[name].detach()[owned], weights[name][owned]), (
                f"{name}: weights owned after experience {k} changed"
            )


def check_resume(run: Run, whole, benchmark, path: Path, differences) -> None:
    """A fresh strategy loaded from the checkpoint of ``run.save_after`` and trained on
    ends bit-identical to the uninterrupted run."""
    resumed, _ = make_strategy(run)
    start = load_checkpoint(resumed, path, benchmark.train_stream)
    assert start == run.save_after + 1
    train(run, resumed, benchmark, benchmark.train_stream[start:])
    assert not differences(whole.model.state_dict(), resumed.model.state_dict()), "weights"
    assert not differences(whole.snapshots.state_dict(), resumed.snapshots.state_dict()), "store"
    if run.mem_size:
        assert buffer_of(whole).state_dict() == buffer_of(resumed).state_dict(), "buffer"
    assert whole.evaluator.get_all_metrics() == resumed.evaluator.get_all_metrics(), "metrics"


def check_run(run: Run, differences, folder: Path) -> None:
    """Train ``run`` to the end and check every invariant (a failing example's replay)."""
    benchmark, probe = make_benchmark(run)
    strategy, counter = make_strategy(run)
    record = Record(run, strategy, benchmark, probe)
    stopped = []
    path = folder / "run.ckpt"

    def after_train(k):
        stopped.append(counter.epochs < run.epochs)
        record(k)

    if run.eval_first:  # grows an incremental head to every class before training
        strategy.eval(benchmark.test_stream)
    train(run, strategy, benchmark, benchmark.train_stream, after_train, save_to=path)
    results = strategy.evaluator.get_last_metrics()
    assert any(k.startswith("Top1_Acc_Stream/eval_phase/test_stream") for k in results)
    if any(stopped):
        event("early stopping ended an experience")
    if record.short_class:
        event("a class had fewer samples than its share")
    if run.mode in ("nested", "full"):
        check_teachers(record)
    if run.mode == "nested":
        check_owned_weights(record)
    check_resume(run, strategy, benchmark, path, differences)


@pytest.mark.parametrize(
    "before_training",
    [False, True],
    ids=["plugins", "eval-before-training"],
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_run_keeps_the_invariants(before_training, data, differences):
    """Training and evaluation finish; teachers are the snapshots bit for bit (``nested``,
    ``full``); owned weights never move (``nested``); the buffer follows the share rule
    and never exceeds ``mem_size``; ``store.nbytes()`` is its documented formula; a
    checkpoint at a random boundary resumes to the uninterrupted run's weights, store,
    buffer and metrics."""
    run = data.draw(runs(before_training), label="run")
    note(repr(run))
    with tempfile.TemporaryDirectory() as folder:
        check_run(run, differences, Path(folder))
