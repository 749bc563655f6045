"""M2KD beside Avalanche's fine-tuning, Replay, LwF, iCaRL, ER-ACE, DER++ and BiC on Split Fashion-MNIST.

Every method gets the same class order, backbone, optimiser, epochs, mini-batch,
exemplar budget (or total memory), class-balanced exemplar memory and seed; only the
method changes. The methods are objects in :data:`benchmarks.methods.METHODS`: each
builds its strategy and counts its own stored bytes. Exemplars are chosen by the
shared class-balanced herding memory, except by iCaRL (its own herding), ER-ACE and
DER (their own class-balanced random memories; DER's stores logits with each).

Each run writes a JSON record, so an interrupted sweep resumes where it stopped;
``report`` turns the records into Markdown tables, a JSON summary and PNGs (accuracy
per step for every method and M2KD's accuracy matrix; accuracy against total memory).

    python -m benchmarks.compare prepare --root data          # unpack Debian's files
    python -m benchmarks.compare run --root data --out results/fmnist --preset cpu
    python -m benchmarks.compare run --root data --out results/fmnist --preset cpu --ablation
    python -m benchmarks.compare run --root data --out results/fmnist --preset cpu --total-memory
    python -m benchmarks.compare run --root data --out results/fmnist --class-order permuted \
        --total-memory 600000 1200000 --methods er-ace der bic m2kd
    python -m benchmarks.compare report --out results/fmnist

``--class-order permuted`` orders the 10 classes by
``numpy.random.RandomState(seed).permutation(10)`` for each seed (PyCIL's way of
seeding its order); ``fixed`` (default) is 0..9 for every seed.

``--total-memory BYTES [BYTES ...]`` gives every method the same total memory instead of
the same exemplar count: what a method stores besides exemplars (M2KD's snapshot
store, LwF's, iCaRL's and BiC's previous model, BiC's validation split, DER's logits)
is charged against it and the rest buys exemplars
(:meth:`benchmarks.methods.Method.exemplars_for`). Given alone, it means the bytes of
200, 1,000 and 2,000 exemplars plus one fp32 model (:func:`default_total_memory`). A
method whose fixed bytes exceed a total is recorded as over budget, not run.

``run --wandb`` also logs each run to Weights & Biases through
:class:`avalanche_m2kd.WandBLogger` (``WANDB_MODE=offline`` works without network): the
run's configuration and M2KD options, Avalanche's accuracy metrics, accuracy, old- and
new-class accuracy and forgetting per step, the accuracy matrix as a table, and the
final figures and memory bytes in the run summary.

Presets (``--preset``; any option given explicitly wins):

* ``cpu`` — the README's table on 2 CPU cores: the small CNN (width 32), 300 training
  and 200 test images per class, 5 epochs, SGD lr 0.05 / momentum 0.9 / weight decay
  5e-4, batch 64 (+64 replayed), streams ``5x2`` and ``2+1``, budgets 0, 200, 1000,
  seeds 0, 1, 2.
* ``quick`` — the same on 100/100 images per class, 2 epochs, one seed (minutes).
* ``gpu`` — ResNet-32, all 6,000/1,000 images per class, 30 epochs, batch 128.
* ``memory`` — the equal-total-memory headline, sized to regenerate in about 90
  minutes on 2 cores (two runs side by side): the small CNN, 200 training and 100 test
  images per class, 4 epochs, permuted class orders, seeds 0, 1, 2, and (with
  ``--total-memory`` alone) the bytes of 200, 500 and 1,000 exemplars plus one model.
* ``evidence`` — a regime where memory matters (issue 22): the small CNN, 1,000
  training and 500 test images per class, 8 epochs at a cosine rate (joint training
  within 0.010 of its 16-epoch accuracy: docs' Run time page), streams ``5x2``, ``2+1``
  and ``5+1``, seeds 0-4 with permuted orders, and (with ``--total-memory`` alone) the
  bytes of 100, 300 and 500 exemplars (1%, 3% and 5% of the 10,000 training images)
  plus one model; M2KD, Replay-LA (at ``tau = 0.75``), ER-ACE, DER++ and BiC.

``--ablation --total-memory BYTES ...`` runs M2KD's variants at equal total memory
(records of kind ``memory``, one row per variant beside the methods).
"""  # noqa: E501 (its first line is the CLI description, kept whole)

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="no QP solver")
warnings.filterwarnings("ignore", category=DeprecationWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avalanche_m2kd import WandBLogger  # noqa: E402
from avalanche_m2kd.data.fmnist import (  # noqa: E402
    DEBIAN_FASHION_MNIST,
    FashionMNISTNotFoundError,
    prepare_fashion_mnist,
    split_fmnist,
)
from avalanche_m2kd.metrics import experience_accuracies  # noqa: E402
from avalanche_m2kd.pruning import FaithfulKeep  # noqa: E402
from benchmarks.backbones import FEATURE_STAGES, make_backbone  # noqa: E402
from benchmarks.methods import BYTE_KINDS, Setting, model_bytes, seed_everything  # noqa: E402
from benchmarks.methods import METHODS as REGISTRY  # noqa: E402
from benchmarks.past_defaults import on_01  # noqa: E402
from benchmarks.stats import paired_markdown  # noqa: E402

#: Fashion-MNIST: 10 classes of 1x28x28 images (784 bytes each as uint8).
N_CLASSES, IMAGE_SHAPE = 10, (1, 28, 28)

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(backbone="cnn", train_per_class=300, test_per_class=200, epochs=5, batch_size=64,
                lr=0.05, streams=["5x2", "2+1"], budgets=[0, 200, 1000], seeds=[0, 1, 2]),
    "quick": dict(backbone="cnn", train_per_class=100, test_per_class=100, epochs=2, batch_size=64,
                  lr=0.05, streams=["5x2", "2+1"], budgets=[0, 200], seeds=[0]),
    "memory": dict(backbone="cnn", train_per_class=200, test_per_class=100, epochs=4, batch_size=64,
                   lr=0.05, streams=["5x2", "2+1"], budgets=[0, 200, 1000], seeds=[0, 1, 2],
                   class_order="permuted", memory_exemplars=[200, 500, 1000]),
    "evidence": dict(backbone="cnn", train_per_class=1000, test_per_class=500, epochs=8,
                     batch_size=64, lr=0.05, lr_schedule="cosine", streams=["5x2", "2+1", "5+1"],
                     budgets=[0, 100, 500], seeds=[0, 1, 2, 3, 4], class_order="permuted",
                     memory_exemplars=[100, 300, 500],
                     methods=["m2kd", "replay-la-0.75", "er-ace", "der", "bic"]),
    "gpu": dict(backbone="resnet32", train_per_class=None, test_per_class=None, epochs=30,
                batch_size=128, lr=0.1, streams=["5x2", "2+1"], budgets=[0, 200, 1000],
                seeds=[0, 1, 2]),
}

#: Methods of the headline table, in its order (:data:`benchmarks.methods.METHODS`).
#: Naive has no memory; Replay, iCaRL, ER-ACE, DER and BiC need one. ``replay-la`` and
#: ``lwf-la`` are Avalanche's Replay and LwF with M2KD's default criterion,
#: :class:`~avalanche_m2kd.LogitAdjustedCrossEntropy` at Menon et al.'s ``tau = 1``, M2KD's
#: default until 0.2 (``replay-la-0.75``: at M2KD's default since, to check the peer is
#: not held back by its ``tau``). ``m2kd-full`` is M2KD with ``snapshot_mode="full"``.
#: ``bic-union`` is BiC drawing its mini-batches uniformly from new data and memory
#: (:class:`benchmarks.methods.BiCMethod`'s ``sampling``), the check that found
#: Avalanche's half-memory batches the better choice (:doc:`/benchmarks/peers`).
METHODS = tuple(REGISTRY)

#: ``--class-order`` choices (:func:`class_order`).
CLASS_ORDERS = ("fixed", "permuted")

#: ``--lr-schedule`` choices (:func:`lr_schedule_plugins`).
LR_SCHEDULES = ("constant", "cosine")

#: Exemplar counts of :func:`default_total_memory`'s budgets (each plus one model).
DEFAULT_MEMORY_EXEMPLARS = (200, 1000, 2000)

#: M2KD ablation variants: ``M2KDStrategy`` options on top of the defaults (nested
#: store, ``own`` slice, head-input features, batch-statistics teachers, logit
#: adjustment; the defaults themselves are the headline's ``m2kd``). ``teacher_dtype``
#: and ``mixed_precision`` are names of ``torch`` dtypes (records are JSON), turned
#: into dtypes by :class:`benchmarks.methods.M2KDMethod`. The component
#: variants fix ``teacher_slice="cumulative"``: they were measured before ``own``
#: became the default, and are kept as they ran.
_CUM = dict(teacher_slice="cumulative")


def _late_shares(n: int, share: float = 0.5) -> list[float]:
    """``prune_ratio`` per experience of an ``n``-experience stream: each experience but
    the last owns ``share / n`` of every layer (``"fair"`` gives ``1 / n``) and the last
    keeps all that is left, a larger trainable part for the final model.

    Example:
        >>> _late_shares(5)
        [0.9, 0.888889, 0.875, 0.857143, 0.0]
    """
    s = share / n
    return [round(1 - s / (1 - t * s), 6) for t in range(n - 1)] + [0.0]

#: :class:`avalanche_m2kd.pruning.FaithfulKeep` with its defaults, as a record holds it
#: (turned into the object by :class:`benchmarks.methods.M2KDMethod`).
FAITHFUL_KEEP = FaithfulKeep().plain()

_DENSE = dict(restore_released_at="end_of_experience")
#: The nested store's and the feature term's at their 0.2 values, for the variants measured
#: on top of 0.2 (each sets ``logit_adjustment`` itself). Those measured before 0.2 are
#: built with :func:`benchmarks.past_defaults.on_01`.
_DEFAULTS_02 = dict(prune_ratio=FAITHFUL_KEEP, feat_weight=0.1, **_DENSE)


ABLATION: dict[str, dict[str, Any]] = {
    "defaults": {},
    "0.1 defaults (fair shares, sparse between experiences, feature weight 1)": on_01(),
    "nested, no feature term": on_01(feat_weight=0.0),
    **{
        f"nested, half shares then the rest, {n} experiences": on_01(prune_ratio=_late_shares(n))
        for n in (5, 9)
    },
    **{
        f"nested, dense between experiences, half shares then the rest, {n} experiences": on_01(
            **_DENSE, prune_ratio=_late_shares(n)
        )
        for n in (5, 9)
    },
    **{
        f"nested, dense between experiences, half shares then the rest, {n} experiences, "
        "no feature term": on_01(**_DENSE, prune_ratio=_late_shares(n), feat_weight=0.0)
        for n in (5, 9)
    },
    "nested, dense between experiences": on_01(**_DENSE),
    "nested, dense between experiences, no feature term": on_01(**_DENSE, feat_weight=0.0),
    "nested, dense between experiences, feature weight 0.1": on_01(**_DENSE, feat_weight=0.1),
    "nested, faithful keep": on_01(prune_ratio=FAITHFUL_KEEP),
    "nested, faithful keep, dense between experiences": on_01(
        **_DENSE, prune_ratio=FAITHFUL_KEEP
    ),
    "nested, faithful keep, dense between experiences, no feature term": on_01(
        **_DENSE, prune_ratio=FAITHFUL_KEEP, feat_weight=0.0
    ),
    **{
        f"0.2 defaults, logit adjustment {tau}": {**_DEFAULTS_02, "logit_adjustment": tau}
        for tau in (0.25, 0.5, 0.75, 1.0)
    },
    "nested, cumulative": on_01(snapshot_mode="nested", **_CUM),
    "pruned, cumulative": on_01(snapshot_mode="pruned", **_CUM),
    "full, cumulative": on_01(snapshot_mode="full", **_CUM),
    "no distillation (replay + LA)": on_01(
        snapshot_mode="full", mm_weight=0.0, feat_weight=0.0, **_CUM
    ),
    "last teacher (LwF + LA)": on_01(
        teachers="last", snapshot_mode="full", feat_weight=0.0, **_CUM
    ),
    "last teacher, no LA (LwF)": on_01(
        teachers="last", snapshot_mode="full", feat_weight=0.0, logit_adjustment=0.0, **_CUM
    ),
    "all teachers, cumulative": on_01(snapshot_mode="full", feat_weight=0.0, **_CUM),
    "all teachers, own": on_01(snapshot_mode="full", teacher_slice="own", feat_weight=0.0),
    "all teachers, own, 2 sampled per batch": on_01(
        snapshot_mode="full", teacher_slice="own", feat_weight=0.0, teacher_sample=2
    ),
    "all teachers, own, bf16 teachers": on_01(
        snapshot_mode="full", teacher_slice="own", feat_weight=0.0, teacher_dtype="bfloat16"
    ),
    "m2kd-full, bf16 student": on_01(snapshot_mode="full", mixed_precision="bfloat16"),
    "m2kd-full, bf16 teachers": on_01(snapshot_mode="full", teacher_dtype="bfloat16"),
    "full, cumulative + stage features": on_01(
        snapshot_mode="full", feature_layers=list(FEATURE_STAGES), **_CUM
    ),
    "full, cumulative + features from all teachers": on_01(
        snapshot_mode="full", feature_teachers="all", **_CUM
    ),
    "full, cumulative, no LA": on_01(snapshot_mode="full", logit_adjustment=0.0, **_CUM),
    "full, cumulative, teachers with running BN statistics": on_01(
        snapshot_mode="full", teacher_bn="running", **_CUM
    ),
    # Where the defaults' final accuracy goes in the evidence regime (each one change):
    "defaults, no distillation": dict(mm_weight=0.0, feat_weight=0.0),
    "defaults, no feature term": dict(feat_weight=0.0),
    "defaults, last teacher only": dict(teachers="last"),
    "defaults, pruned copies": dict(snapshot_mode="pruned"),
    "defaults, no fine-tune after pruning": dict(post_prune_epochs=0),
    "defaults, no distillation, no fine-tune after pruning": dict(
        mm_weight=0.0, feat_weight=0.0, post_prune_epochs=0
    ),
}


def runs_for(
    stream: str, budgets: list[int], methods: tuple[str, ...] = METHODS
) -> list[tuple[str, int]]:
    """The (method, budget) pairs of the headline table for one stream."""
    pairs = []
    for budget in budgets:
        for method in methods:
            use = REGISTRY[method].exemplars
            if use == "never" and budget > 0 or use == "required" and budget == 0:
                continue
            pairs.append((method, budget))
    return pairs


def class_order(kind: str, seed: int, n_classes: int = N_CLASSES) -> list[int]:
    """The class order of a run: ``"fixed"`` is ``0..n-1``; ``"permuted"`` is
    ``numpy.random.RandomState(seed).permutation(n_classes)``, as PyCIL seeds its order
    (``np.random.seed(seed); np.random.permutation(n)``).

    Example:
        >>> class_order("permuted", 1993, 100)[:3]  # PyCIL's CIFAR-100 order
        [68, 56, 78]
    """
    if kind == "fixed":
        return list(range(n_classes))
    if kind == "permuted":
        return [int(c) for c in np.random.RandomState(seed).permutation(n_classes)]
    raise ValueError(f"Expected a class order in {CLASS_ORDERS}, but got {kind!r}")


def backbone_bytes(cfg: argparse.Namespace) -> int:
    """fp32 bytes (parameters and buffers) of ``cfg``'s backbone with a head over all classes."""
    return model_bytes(make_backbone(cfg.backbone, in_channels=IMAGE_SHAPE[0], n_classes=N_CLASSES,
                                     width=cfg.width, incremental_head=False))


def default_total_memory(cfg: argparse.Namespace) -> list[int]:
    """The bytes of the preset's exemplar counts (200, 1,000 and 2,000 unless it says)
    plus one model of ``cfg``'s backbone."""
    counts = getattr(cfg, "memory_exemplars", None) or DEFAULT_MEMORY_EXEMPLARS
    return [n * math.prod(IMAGE_SHAPE) + backbone_bytes(cfg) for n in counts]


# --------------------------------------------------------------------------- runs
def setting_for(cfg: argparse.Namespace, benchmark, loggers: list | None = None) -> Setting:
    """The settings every method shares in one run of ``benchmark``."""
    classes = tuple(
        tuple(sorted(int(c) for c in exp.classes_in_this_experience))
        for exp in benchmark.train_stream
    )
    return Setting(
        n_classes=benchmark.n_classes,
        experience_classes=classes,
        image_shape=tuple(benchmark.train_stream[0].dataset[0][0].shape),
        backbone=cfg.backbone,
        width=cfg.width,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        temperature=cfg.temperature,
        device=cfg.device,
        loggers=tuple(loggers or ()),
    )


def lr_schedule_plugins(kind: str, strategy: Any, epochs: int) -> list[Any]:
    """The plugins that give ``strategy``'s optimiser the learning rate of ``kind``
    within each experience: none for ``"constant"``; for ``"cosine"``, Avalanche's
    ``LRSchedulerPlugin`` with ``CosineAnnealingLR(T_max=epochs)`` stepped after each
    epoch, the rate and the schedule reset after each experience (every method alike;
    BiC's bias correction keeps its own optimiser and schedule)."""
    if kind == "constant":
        return []
    if kind == "cosine":
        from avalanche.training.plugins import LRSchedulerPlugin

        annealing = torch.optim.lr_scheduler.CosineAnnealingLR(strategy.optimizer, T_max=epochs)
        return [LRSchedulerPlugin(annealing, reset_scheduler=True, reset_lr=True)]
    raise ValueError(f"Expected a learning-rate schedule in {LR_SCHEDULES}, but got {kind!r}")


def _plan(method: str, budget: int, setting: Setting, options: dict[str, Any] | None,
          total_memory: int | None) -> tuple[int | None, int]:
    """(exemplars, predicted fixed bytes) of a run: ``budget`` exemplars, or what
    ``total_memory`` buys (``None``: it does not fit)."""
    fixed = REGISTRY[method].fixed_bytes(setting, options)
    if total_memory is None:
        return budget, fixed
    return REGISTRY[method].exemplars_for(total_memory, setting, options), fixed


def forgetting(matrix: list[list[float | None]]) -> list[float]:
    """Average forgetting after each step: mean over old experiences of best-past minus now.

    Example:
        >>> forgetting([[1.0, None], [0.6, 0.9]])
        [0.0, 0.4]
    """
    out = []
    for t, row in enumerate(matrix):
        drops = [max(matrix[s][j] for s in range(j, t)) - row[j] for j in range(t)]
        out.append(sum(drops) / len(drops) if drops else 0.0)
    return [round(v, 10) for v in out]


def run_one(method: str, budget: int, stream: str, seed: int, cfg: argparse.Namespace,
            options: dict[str, Any] | None = None, variant: str | None = None,
            total_memory: int | None = None, plugins: tuple = ()) -> dict[str, Any]:
    """Train ``method`` over ``stream`` and return its record (see the module docstring).

    Args:
        method: a name in :data:`METHODS`.
        budget: exemplars (ignored with ``total_memory``).
        stream, seed: the stream name and the seed of torch, NumPy, ``random`` and
            (``--class-order permuted``) the class order.
        cfg: the parsed ``run`` options.
        options: the method's hyper-parameters over its defaults (M2KD's ablation).
        variant: the ablation variant's name.
        total_memory: bytes shared by exemplars and everything else the method stores.
        plugins: Avalanche plugins added to the method's own, after them (their hooks
            run last), e.g. :mod:`benchmarks.phase_times`'s clock; they change nothing
            the method computes.

    Returns:
        The record; with ``total_memory`` too small for the method, a record with
        ``over_budget=True`` and no accuracies (nothing trained).
    """
    seed_everything(seed)
    order_kind = getattr(cfg, "class_order", "fixed")
    order = class_order(order_kind, seed)
    benchmark = split_fmnist(
        stream,
        dataset_root=cfg.root,
        class_order=order,
        max_train_per_class=cfg.train_per_class,
        max_test_per_class=cfg.test_per_class,
    )
    setting = setting_for(cfg, benchmark)
    n_exemplars, fixed = _plan(method, budget, setting, options, total_memory)
    base = dict(
        method=method,
        variant=variant or method,
        options=options or {},
        stream=stream,
        seed=seed,
        class_order=order_kind,
        classes=order,
        total_memory=total_memory,
        predicted_fixed_bytes=fixed,
    )
    if n_exemplars is None:
        return dict(base, budget=0, over_budget=True)
    wandb_logger = None
    if getattr(cfg, "wandb", False):
        config = {k: v for k, v in vars(cfg).items() if k != "func"}
        config.update(
            method=method,
            variant=variant or method,
            budget=n_exemplars,
            stream=stream,
            seed=seed,
            class_order=order_kind,
            classes=order,
            total_memory=total_memory,
            options={k: v for k, v in (options or {}).items() if k != "plugins"},
        )
        wandb_logger = WandBLogger(project_name=cfg.wandb_project, config=config, dir=cfg.out,
                                   run_name=f"{variant or method}-{stream}-b{n_exemplars}-s{seed}")
        setting = setting_for(cfg, benchmark, loggers=[wandb_logger])
    seed_everything(seed)  # again: nothing before the strategy (a W&B run id) may shift its draws
    strategy = REGISTRY[method].build(n_exemplars, setting, options)
    schedule = getattr(cfg, "lr_schedule", "constant")
    strategy.plugins.extend([*lr_schedule_plugins(schedule, strategy, cfg.epochs), *plugins])
    sizes = [len(e.dataset) for e in benchmark.test_stream]
    matrix: list[list[float | None]] = []
    start = time.perf_counter()
    train_time = 0.0
    for exp in benchmark.train_stream:
        t = exp.current_experience
        t0 = time.perf_counter()
        strategy.train(exp, num_workers=0)
        train_time += time.perf_counter() - t0
        accs = experience_accuracies(strategy.eval(benchmark.test_stream[: t + 1], num_workers=0))
        matrix.append([accs[j] if j <= t else None for j in range(len(sizes))])
        print(
            f"  [{method}/{n_exemplars}/{stream}/s{seed}{'/' + variant if variant else ''}] step "
            f"{t + 1}: "
            f"{[round(accs[j], 3) for j in range(t + 1)]}",
            flush=True,
        )
    acc, old, new = [], [], []
    for t, row in enumerate(matrix):
        seen = sum(sizes[: t + 1])
        acc.append(sum(row[j] * sizes[j] for j in range(t + 1)) / seen)
        old_n = sum(sizes[:t])
        old.append(sum(row[j] * sizes[j] for j in range(t)) / old_n if t else None)
        new.append(row[t])
    stored = REGISTRY[method].stored_bytes(strategy, setting)
    record = dict(
        base,
        budget=n_exemplars,
        accuracy=acc,
        old_accuracy=old,
        new_accuracy=new,
        forgetting=forgetting(matrix),
        matrix=matrix,
        average_incremental_accuracy=sum(acc) / len(acc),
        final_accuracy=acc[-1],
        final_old_accuracy=old[-1],
        wall_time_s=time.perf_counter() - start,
        train_time_s=train_time,
        train_images_per_class=cfg.train_per_class,
        test_images_per_class=cfg.test_per_class,
        epochs=cfg.epochs,
        lr_schedule=schedule,
        stored_bytes=stored,
        stored_total=sum(stored.values()),
        snapshot_bytes=stored["models"] + stored["snapshots"],
        exemplar_bytes=stored["exemplars"],
        model_bytes=model_bytes(strategy.model),
        config={k: v for k, v in vars(cfg).items() if k not in ("func",)},
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
    m2kd_config = getattr(strategy, "m2kd_config", None)
    if m2kd_config is not None:  # every M2KD option as it ran, defaults included
        record["m2kd_config"] = json.loads(json.dumps(m2kd_config, default=str))
    nested = getattr(getattr(strategy, "masking", None), "nested_training", None)
    if nested is not None and nested.keep_searches:  # FaithfulKeep's measurements
        record["keep_searches"] = nested.keep_searches
    if wandb_logger is not None:
        _log_to_wandb(wandb_logger, record)
    return record


def _log_to_wandb(logger: WandBLogger, record: dict[str, Any]) -> None:
    """Per-step accuracies, the accuracy matrix and the summary of ``record``, then close."""
    import wandb

    steps = zip(record["accuracy"], record["old_accuracy"], record["new_accuracy"], strict=False)
    for t, (acc, old, new) in enumerate(steps):
        row = {
            "step": t + 1,
            "accuracy": acc,
            "new_accuracy": new,
            "forgetting": record["forgetting"][t],
        }
        if old is not None:
            row["old_accuracy"] = old
        logger.run.log(row)
    n = len(record["matrix"])
    table = wandb.Table(columns=["after step"] + [f"experience {j}" for j in range(n)],
                        data=[[t + 1] + row for t, row in enumerate(record["matrix"])])
    logger.run.log({"accuracy_matrix": table})
    logger.run.summary.update({k: record[k] for k in (
        "average_incremental_accuracy", "final_accuracy", "final_old_accuracy", "snapshot_bytes",
        "exemplar_bytes", "stored_total", "model_bytes", "wall_time_s")})
    logger.close()


def _record_path(out: Path, kind: str, name: str, budget: int, stream: str, seed: int,
                 order: str = "fixed") -> Path:
    """Where a run's record lives; ``budget`` is the total memory for ``kind="memory"``."""
    safe = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    size = f"m{budget}" if kind == "memory" else f"b{budget}"
    suffix = "" if order == "fixed" else f"_{order}"
    return out / "runs" / kind / f"{stream.replace('+', 'p')}_{safe}_{size}_s{seed}{suffix}.json"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


#: One run to make: (kind, method or variant, options, budget or total memory, stream, seed).
Job = tuple[str, str, dict[str, Any] | None, int, str, int]


def _jobs(cfg: argparse.Namespace) -> list[Job]:
    """Every (kind, method or variant, options, budget or total memory, stream, seed) of ``cfg``."""
    jobs: list[Job] = []
    for seed in cfg.seeds:
        for stream in cfg.streams:
            if cfg.ablation:
                for name, options in ABLATION.items():
                    if cfg.variants and name not in cfg.variants:
                        continue
                    if cfg.total_memory is not None:
                        jobs.extend(
                            ("memory", name, options, total, stream, seed)
                            for total in cfg.total_memory
                        )
                    else:
                        jobs.extend(
                            ("ablation", name, options, b, stream, seed)
                            for b in cfg.ablation_budgets
                        )
            elif cfg.total_memory is not None:
                for total in cfg.total_memory:
                    for method in cfg.methods:
                        # naive stores nothing: see its budget-0 row
                        if REGISTRY[method].exemplars != "never":
                            jobs.append(("memory", method, None, total, stream, seed))
            else:
                for method, budget in runs_for(stream, cfg.budgets, tuple(cfg.methods)):
                    jobs.append(("headline", method, None, budget, stream, seed))
    return jobs




def _run_and_write(job: Job, cfg: argparse.Namespace, path: Path) -> str:
    """Run one job, write its record atomically, and return its summary line."""
    kind, name, options, budget, stream, seed = job
    variant = name if options is not None else None  # an ablation variant of M2KD
    method = name if variant is None else "m2kd"
    total = budget if kind == "memory" else None
    record = run_one(
        method, budget, stream, seed, cfg, options, variant=variant, total_memory=total
    )
    record["kind"] = kind
    _write_atomic(path, json.dumps(record, indent=1))
    if record.get("over_budget"):
        return (f"    {name} over budget: it stores {record['predicted_fixed_bytes']} bytes "
                "besides exemplars")
    return (
        f"    {name} {stream} s{seed}: {record['budget']} exemplars, stored "
        f"{record['stored_total']} bytes; final {record['final_accuracy']:.4f}, avg inc "
        f"{record['average_incremental_accuracy']:.4f}, {record['wall_time_s']:.1f} s"
    )


def cmd_run(cfg: argparse.Namespace) -> None:
    """Run every missing (method or variant, budget or total memory, stream, seed) and write
    its record; with ``--workers N``, N runs side by side, each in a fresh process."""
    out = Path(cfg.out)
    jobs = _jobs(cfg)
    start = time.perf_counter()
    todo = []
    for i, job in enumerate(jobs):
        kind, name, _, budget, stream, seed = job
        path = _record_path(out, kind, name, budget, stream, seed, cfg.class_order)
        if not path.exists():
            size = f"total_memory={budget}" if kind == "memory" else f"budget={budget}"
            label = (f"[{i + 1}/{len(jobs)}] {kind} {name} {size} stream={stream} seed={seed} "
                     f"order={cfg.class_order}")
            todo.append((label, job, path))
    if cfg.workers == 1:
        for label, job, path in todo:
            print(f"{label} ({time.perf_counter() - start:.0f} s)", flush=True)
            print(_run_and_write(job, cfg, path), flush=True)
    else:
        # A fresh process per run (spawned: no state shared with this one), so a record
        # is the same whichever worker ran it and whatever ran before it there.
        context = multiprocessing.get_context("spawn")
        fresh: dict[str, Any] = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
        with ProcessPoolExecutor(cfg.workers, mp_context=context, **fresh) as pool:
            pending = {pool.submit(_run_and_write, job, cfg, path): label
                       for label, job, path in todo}
            for future in as_completed(pending):
                print(f"{pending[future]} ({time.perf_counter() - start:.0f} s)", flush=True)
                print(future.result(), flush=True)
    print(f"done: {len(jobs)} runs in {out / 'runs'} ({time.perf_counter() - start:.0f} s)")


# --------------------------------------------------------------------------- report
def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _with_defaults(record: dict[str, Any]) -> dict[str, Any]:
    """A record with the fields older records lack: fixed class order, no total
    memory, stored bytes from their snapshot and exemplar bytes."""
    r = dict(record)
    r.setdefault("kind", "headline")
    r.setdefault("class_order", "fixed")
    r.setdefault("total_memory", None)
    if "stored_bytes" not in r and not r.get("over_budget"):
        r["stored_bytes"] = dict.fromkeys(BYTE_KINDS, 0)
        r["stored_bytes"].update(snapshots=r["snapshot_bytes"], exemplars=r["exemplar_bytes"])
        r["stored_total"] = r["snapshot_bytes"] + r["exemplar_bytes"]
    return r


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every run record under ``out/runs`` (older records completed by :func:`_with_defaults`)."""
    return [
        _with_defaults(json.loads(p.read_text())) for p in sorted((out / "runs").rglob("*.json"))
    ]


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group records by (kind, class order, stream, total memory, budget, variant) with
    means and stds over seeds; records of runs over budget are left out."""
    groups: dict[tuple, list[dict]] = {}
    for r in map(_with_defaults, records):
        if r.get("over_budget"):
            continue
        key = (
            r["kind"], r["class_order"], r["stream"], r["total_memory"], r["budget"], r["variant"],
        )
        groups.setdefault(key, []).append(r)
    rows = []
    for (kind, order, stream, total, budget, variant), rs in groups.items():
        rows.append(
            dict(
                kind=kind,
                class_order=order,
                stream=stream,
                total_memory=total,
                budget=budget,
                variant=variant,
                seeds=sorted(r["seed"] for r in rs),
                average_incremental_accuracy=[r["average_incremental_accuracy"] for r in rs],
                final_accuracy=[r["final_accuracy"] for r in rs],
                final_old_accuracy=[r["final_old_accuracy"] for r in rs],
                final_new_accuracy=[r["new_accuracy"][-1] for r in rs],
                final_forgetting=[r["forgetting"][-1] for r in rs],
                accuracy_per_step=[
                    statistics.mean(v) for v in zip(*(r["accuracy"] for r in rs), strict=False)
                ],
                old_accuracy_per_step=[
                    None if v[0] is None else statistics.mean(v)
                    for v in zip(*(r["old_accuracy"] for r in rs), strict=False)
                ],
                new_accuracy_per_step=[
                    statistics.mean(v) for v in zip(*(r["new_accuracy"] for r in rs), strict=False)
                ],
                wall_time_s=statistics.mean(r["wall_time_s"] for r in rs),
                snapshot_bytes=rs[0]["snapshot_bytes"],
                exemplar_bytes=rs[0]["exemplar_bytes"],
                stored_bytes=rs[0]["stored_bytes"],
                stored_total=max(r["stored_total"] for r in rs),
                model_bytes=rs[0]["model_bytes"],
            )
        )
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(
        key=lambda r: (
            r["kind"], r["class_order"], r["stream"], r["total_memory"] or 0, r["budget"],
            order.get(r["variant"], 99), r["variant"],
        )
    )
    return rows


def _other_bytes(row: dict[str, Any]) -> int:
    """Stored bytes that are neither snapshots/models nor replay exemplars."""
    return sum(row["stored_bytes"][k] for k in ("validation", "logits", "other"))


def markdown(rows: list[dict[str, Any]], records: list[dict[str, Any]] | None = None) -> str:
    """The Markdown tables of :func:`summarize`'s rows: one per (kind, class order,
    stream), old/new-class accuracy per step for the headline, and the total-memory
    tables (:func:`memory_markdown`) when there are ``kind="memory"`` runs."""
    lines: list[str] = []
    current = None
    for r in rows:
        if (r["kind"], r["class_order"], r["stream"]) != current:
            current = (r["kind"], r["class_order"], r["stream"])
            lines += [
                "",
                f"**{r['kind']}, stream {r['stream']}, {r['class_order']} class order** "
                "(mean ± std over the seeds run)",
                "",
                "| method | budget | seeds | avg. incr. acc. | final acc. | final old | final new "
                "| "
                "forgetting | wall s | snapshots KiB | exemplars KiB | other KiB | stored KiB |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
        lines.append(
            f"| {r['variant']} | {r['budget']} | {len(r['seeds'])} | "
            f"{_mean_std(r['average_incremental_accuracy'])} | "
            f"{_mean_std(r['final_accuracy'])} | {_mean_std(r['final_old_accuracy'])} | "
            f"{_mean_std(r['final_new_accuracy'])} | {_mean_std(r['final_forgetting'])} | "
            f"{r['wall_time_s']:.0f} | {r['snapshot_bytes'] / 1024:.0f} | "
            f"{r['exemplar_bytes'] / 1024:.0f} | "
            f"{_other_bytes(r) / 1024:.0f} | {r['stored_total'] / 1024:.0f} |"
        )
    head = [r for r in rows if r["kind"] == "headline"]
    keys = sorted({(r["class_order"], r["stream"], r["budget"]) for r in head})
    for order, stream, budget in keys:
        group = [
            r
            for r in head
            if (r["class_order"], r["stream"], r["budget"]) == (order, stream, budget)
        ]
        steps = len(group[0]["new_accuracy_per_step"])
        lines += [
            "",
            f"**headline, stream {stream}, {order} class order, {budget} exemplars: old / "
            "new-class "
            "accuracy after each step** (mean over the seeds run)",
            "",
            "| method | " + " | ".join(f"step {t + 1}" for t in range(steps)) + " |",
            "|---|" + "---|" * steps,
        ]
        for r in group:
            cells = [f"{'–' if o is None else f'{o:.2f}'} / {n:.2f}"
                     for o, n in zip(r["old_accuracy_per_step"], r["new_accuracy_per_step"],
                                     strict=False)]
            lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    memory = memory_markdown(rows, records or [])
    return "\n".join(lines).strip() + "\n" + (("\n" + memory) if memory else "")


def memory_markdown(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> str:
    """One table per (class order, stream) of the ``kind="memory"`` runs: a row per
    method, a column per total memory, cells ``final / avg. incr. (exemplars bought)``;
    ``over budget`` where the method's fixed bytes exceed the total."""
    memory = [r for r in rows if r["kind"] == "memory"]
    over = {
        (r["class_order"], r["stream"], r["total_memory"], r["variant"]): r["predicted_fixed_bytes"]
        for r in map(_with_defaults, records)
        if r.get("over_budget")
    }
    keys = {(r["class_order"], r["stream"]) for r in memory} | {k[:2] for k in over}
    lines: list[str] = []
    order = {m: i for i, m in enumerate(METHODS)}
    for class_order_, stream in sorted(keys):
        totals = sorted(
            {
                r["total_memory"]
                for r in memory
                if (r["class_order"], r["stream"]) == (class_order_, stream)
            }
            | {k[2] for k in over if k[:2] == (class_order_, stream)}
        )
        methods = sorted(
            {
                r["variant"]
                for r in memory
                if (r["class_order"], r["stream"]) == (class_order_, stream)
            }
            | {k[3] for k in over if k[:2] == (class_order_, stream)},
            key=lambda m: order.get(m, 99),
        )
        cell = {(r["total_memory"], r["variant"]): r for r in memory
                if (r["class_order"], r["stream"]) == (class_order_, stream)}
        lines += [
            "",
            f"**equal total memory, stream {stream}, {class_order_} class order: final / average "
            "incremental accuracy (exemplars bought)** (mean ± std over the seeds run)",
            "",
            "| method | " + " | ".join(f"{t / 1024:.0f} KiB" for t in totals) + " |",
            "|---|" + "---|" * len(totals),
        ]
        for m in methods:
            cells = []
            for t in totals:
                r = cell.get((t, m))
                if r is not None:
                    cells.append(
                        f"{_mean_std(r['final_accuracy'])} / "
                        f"{_mean_std(r['average_incremental_accuracy'])}"
                        f" ({r['budget']})"
                    )
                elif (class_order_, stream, t, m) in over:
                    cells.append(
                        f"over budget ({over[(class_order_, stream, t, m)] / 1024:.0f} KiB fixed)"
                    )
                else:
                    cells.append("–")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines).strip() + "\n" if lines else ""


def _method_style(name: str) -> dict[str, Any]:
    """One colour (and line style past ten) per method, the same in every figure."""
    if name not in METHODS:
        return {}
    i = METHODS.index(name)
    return dict(color=f"C{i % 10}", linestyle="-" if i < 10 else "--")


def plot(records: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy per step of every headline method (one panel per stream, class order
    and budget) and the accuracy matrix of M2KD's first seed on the longest stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["kind"] != "memory"]
    records = [
        r
        for r in map(_with_defaults, records)
        if r["kind"] != "memory" and not r.get("over_budget")
    ]
    head = [r for r in rows if r["kind"] == "headline"] or rows
    panels = sorted({(r["class_order"], r["stream"], r["budget"]) for r in head})
    m2kd = [r for r in records if r["method"] == "m2kd" and r["kind"] == "headline"] or \
        [r for r in records if r["method"] == "m2kd"]
    n = len(panels) + (1 if m2kd else 0)
    cols = min(n, 4)
    fig, axes = plt.subplots(
        math.ceil(n / cols), cols, figsize=(4.2 * cols, 3.4 * math.ceil(n / cols)), squeeze=False
    )
    for ax, (order, stream, budget) in zip(axes.flat, panels, strict=False):
        for r in head:
            if (r["class_order"], r["stream"], r["budget"]) == (order, stream, budget):
                steps = range(1, len(r["accuracy_per_step"]) + 1)
                ax.plot(steps, r["accuracy_per_step"], marker="o", ms=3, label=r["variant"],
                        **_method_style(r["variant"]))
        title = f"{stream}, {budget} exemplars" + ("" if order == "fixed" else f", {order} order")
        ax.set(title=title, xlabel="step", ylabel="accuracy (seen classes)", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if m2kd:
        r = max(m2kd, key=lambda r: (len(r["matrix"]), r["budget"], -r["seed"]))
        ax = axes.flat[len(panels)]
        data = [[float("nan") if v is None else v for v in row] for row in r["matrix"]]
        im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis")
        ax.set(title=f"M2KD accuracy matrix ({r['stream']}, {r['budget']} ex., seed {r['seed']})",
               xlabel="experience evaluated", ylabel="after step")
        ax.title.set_fontsize(8)
        fig.colorbar(im, ax=ax)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(rows: list[dict[str, Any]], path: Path) -> None:
    """Final and average incremental accuracy against total memory: one line per
    method, one panel per (class order, stream) and metric; error bars are the std
    over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    memory = [r for r in rows if r["kind"] == "memory"]
    panels = sorted({(r["class_order"], r["stream"]) for r in memory})
    metrics = (
        ("final_accuracy", "final accuracy"),
        ("average_incremental_accuracy", "avg. incremental accuracy"),
    )
    fig, axes = plt.subplots(len(panels), 2, figsize=(9.5, 3.6 * len(panels)), squeeze=False)
    for (order, stream), pair in zip(panels, axes, strict=False):
        group = [r for r in memory if (r["class_order"], r["stream"]) == (order, stream)]
        for ax, (key, label) in zip(pair, metrics, strict=False):
            variants = sorted(
                {r["variant"] for r in group},
                key=lambda v: (METHODS.index(v) if v in METHODS else 99, v),
            )
            for m in variants:
                line = sorted(
                    (r for r in group if r["variant"] == m), key=lambda r: r["total_memory"]
                )
                x = [r["total_memory"] / 1024 for r in line]
                y = [statistics.mean(r[key]) for r in line]
                err = [statistics.stdev(r[key]) if len(r[key]) > 1 else 0.0 for r in line]
                ax.errorbar(
                    x, y, yerr=err, marker="o", ms=4, capsize=2, label=m, **_method_style(m)
                )
            ax.set(
                title=f"{stream}, {order} class order: {label}",
                xlabel="total memory (KiB)",
                ylabel=label,
            )
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_report(cfg: argparse.Namespace) -> None:
    """Write ``results.md`` and ``results.json`` from the run records, ``results.png``
    (per-step accuracy, when there are exemplar-count runs) and ``memory.png``
    (accuracy against total memory, when there are ``--total-memory`` runs)."""
    out = Path(cfg.out)
    records = load_records(out)
    if not records:
        raise SystemExit(
            f"error: no run records under {out / 'runs'}; run `python -m benchmarks.compare run` "
            "first"
        )
    rows = summarize(records)
    text = markdown(rows, records)
    paired = paired_markdown([r for r in records if r["kind"] == "memory"])
    if paired:
        text += "\n**Paired by seed, at equal total memory**\n" + paired
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    written = [out / "results.md", out / "results.json"]
    if any(r["kind"] != "memory" for r in rows):
        plot(records, rows, out / "results.png")
        written.append(out / "results.png")
    if any(r["kind"] == "memory" for r in rows):
        plot_memory(rows, out / "memory.png")
        written.append(out / "memory.png")
    print(text)
    print(f"wrote {', '.join(map(str, written))}")


def cmd_prepare(cfg: argparse.Namespace) -> None:
    """Unpack Fashion-MNIST into ``<root>/FashionMNIST/raw/``."""
    try:
        raw = prepare_fashion_mnist(cfg.root, cfg.source)
    except FashionMNISTNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"Fashion-MNIST ready in {raw}")


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=__doc__.splitlines()[0]
    )
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="unpack Fashion-MNIST's idx files for SplitFMNIST")
    prep.add_argument("--root", default="data")
    prep.add_argument("--source", default=str(DEBIAN_FASHION_MNIST))
    prep.set_defaults(func=cmd_prepare)

    run = sub.add_parser("run", help="run the comparison (or the ablation) and write records")
    run.add_argument("--root", default="data", help="dataset root holding FashionMNIST/raw/")
    run.add_argument("--out", default="results/fmnist")
    run.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    run.add_argument("--ablation", action="store_true", help="M2KD variants instead of the methods")
    run.add_argument("--ablation-budgets", type=int, nargs="+", default=[200])
    run.add_argument("--variants", nargs="+", choices=sorted(ABLATION), metavar="VARIANT",
                     help="only these ablation variants (default: all)")
    run.add_argument("--methods", nargs="+", choices=METHODS,
                     help="default: the preset's (the evidence preset: 5), else all")
    run.add_argument("--streams", nargs="+")
    run.add_argument("--budgets", type=int, nargs="+")
    run.add_argument("--seeds", type=int, nargs="+")
    run.add_argument("--class-order", choices=CLASS_ORDERS,
                     help="fixed (default; the memory preset: permuted): 0..9; permuted: "
                          "numpy.random.RandomState(seed).permutation(10) per seed")
    run.add_argument(
        "--total-memory",
        type=int,
        nargs="*",
        metavar="BYTES",
        help="equal total memory per method (or, with --ablation, per M2KD variant) instead "
        "of --budgets; alone: the bytes of "
        f"{', '.join(map(str, DEFAULT_MEMORY_EXEMPLARS))} exemplars plus one fp32 model "
        "(the memory preset: 200, 500, 1000)",
    )
    run.add_argument("--backbone", choices=["cnn", "resnet20", "resnet32"])
    run.add_argument("--width", type=int, default=32, help="CNN width")
    run.add_argument("--train-per-class", type=int)
    run.add_argument("--test-per-class", type=int)
    run.add_argument("--epochs", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--lr", type=float)
    run.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                     help="the rate within each experience: constant (default) or cosine "
                          "(annealed to 0 over the experience's epochs)")
    run.add_argument("--weight-decay", type=float, default=5e-4)
    run.add_argument("--temperature", type=float, default=2.0)
    run.add_argument("--device", default="cpu")
    run.add_argument("--workers", type=_positive_int, default=1,
                     help="runs side by side, each in its own process (one per core)")
    run.add_argument("--wandb", action="store_true",
                     help="log every run to Weights & Biases through avalanche_m2kd.WandBLogger")
    run.add_argument("--wandb-project", default="avalanche-m2kd-compare")
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="tables and plots from the records")
    rep.add_argument("--out", default="results/fmnist")
    rep.set_defaults(func=cmd_report)
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``, filling options left unset from the preset."""
    cfg = build_parser().parse_args(argv)
    if cfg.command == "run":
        for key, value in PRESETS[cfg.preset].items():
            if getattr(cfg, key, None) is None:
                setattr(cfg, key, copy.deepcopy(value))
        if cfg.class_order is None:  # neither given nor set by the preset (the loop above)
            cfg.class_order = "fixed"
        if cfg.lr_schedule is None:
            cfg.lr_schedule = "constant"
        if cfg.methods is None:
            cfg.methods = list(METHODS)
        if cfg.train_per_class is None and cfg.preset != "gpu":
            cfg.train_per_class = PRESETS[cfg.preset]["train_per_class"]
        if cfg.total_memory == []:
            cfg.total_memory = default_total_memory(cfg)
    return cfg


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks.compare``."""
    cfg = parse(argv)
    warnings.simplefilter("ignore")  # Avalanche re-adds some filters: progress is on stdout
    try:
        cfg.func(cfg)
    except FashionMNISTNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
