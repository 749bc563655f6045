"""One run of the comparison harness, and the jobs of a sweep.

:func:`run_one` trains one method (or one of M2KD's ablation variants) over one stream
of one data set with one seed and returns its record: the accuracy matrix, accuracy,
old- and new-class accuracy and forgetting per step, average incremental and final
accuracy, the bytes it stores by kind, the images per class, epochs and wall time.
:func:`jobs_of` lists the runs a ``run`` command asks for, :func:`record_path` says
where each record lives and :func:`run_and_write` makes one (in a worker process with
``--workers``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avalanche_m2kd import WandBLogger
from avalanche_m2kd.metrics import experience_accuracies
from benchmarks.ablation import ABLATION
from benchmarks.backbones import make_backbone
from benchmarks.data_sets import DATA_SETS, DataSet
from benchmarks.methods import METHODS, Setting, model_bytes, seed_everything
from benchmarks.presets import DEFAULT_MEMORY_EXEMPLARS

__all__ = [
    "CLASS_ORDERS",
    "LR_SCHEDULES",
    "Job",
    "backbone_bytes",
    "class_order",
    "data_set_of",
    "default_total_memory",
    "forgetting",
    "jobs_of",
    "lr_schedule_plugins",
    "record_path",
    "run_and_write",
    "run_one",
    "runs_for",
    "setting_for",
]

#: ``--class-order`` choices (:func:`class_order`).
CLASS_ORDERS = ("fixed", "permuted")

#: ``--lr-schedule`` choices (:func:`lr_schedule_plugins`).
LR_SCHEDULES = ("constant", "cosine")


def runs_for(
    stream: str, budgets: list[int], methods: tuple[str, ...] = tuple(METHODS)
) -> list[tuple[str, int]]:
    """The (method, budget) pairs of the headline table for one stream."""
    pairs = []
    for budget in budgets:
        for method in methods:
            use = METHODS[method].exemplars
            if use == "never" and budget > 0 or use == "required" and budget == 0:
                continue
            pairs.append((method, budget))
    return pairs


def class_order(kind: str, seed: int, n_classes: int = 10) -> list[int]:
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


def data_set_of(cfg: argparse.Namespace) -> DataSet:
    """``cfg``'s data set (:data:`benchmarks.data_sets.DATA_SETS`; Fashion-MNIST when
    ``cfg`` names none, as configurations written before 0.3 do)."""
    return DATA_SETS[getattr(cfg, "data_set", None) or "fmnist"]


def backbone_bytes(cfg: argparse.Namespace) -> int:
    """fp32 bytes (parameters and buffers) of ``cfg``'s backbone with a head over all classes."""
    data = data_set_of(cfg)
    return model_bytes(make_backbone(cfg.backbone, in_channels=data.image_shape[0],
                                     n_classes=data.n_classes, width=cfg.width,
                                     incremental_head=False))


def default_total_memory(cfg: argparse.Namespace) -> list[int]:
    """The bytes of the preset's exemplar counts (200, 1,000 and 2,000 unless it says)
    plus one model of ``cfg``'s backbone."""
    counts = getattr(cfg, "memory_exemplars", None) or DEFAULT_MEMORY_EXEMPLARS
    return [n * data_set_of(cfg).image_bytes + backbone_bytes(cfg) for n in counts]


def setting_for(cfg: argparse.Namespace, benchmark: Any, loggers: list | None = None) -> Setting:
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


def plan(method: str, budget: int, setting: Setting, options: dict[str, Any] | None,
          total_memory: int | None) -> tuple[int | None, int]:
    """(exemplars, predicted fixed bytes) of a run: ``budget`` exemplars, or what
    ``total_memory`` buys (``None``: it does not fit)."""
    fixed = METHODS[method].fixed_bytes(setting, options)
    if total_memory is None:
        return budget, fixed
    return METHODS[method].exemplars_for(total_memory, setting, options), fixed


def _known(accuracy: float | None) -> float:
    """An accuracy matrix's entry of an experience already trained on (never ``None``)."""
    assert accuracy is not None, "no accuracy on an experience not trained on yet"
    return accuracy


def forgetting(matrix: list[list[float | None]]) -> list[float]:
    """Average forgetting after each step: mean over old experiences of best-past minus now.

    Example:
        >>> forgetting([[1.0, None], [0.6, 0.9]])
        [0.0, 0.4]
    """
    out = []
    for t, row in enumerate(matrix):
        drops = [max(_known(matrix[s][j]) for s in range(j, t)) - _known(row[j]) for j in range(t)]
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
    data = data_set_of(cfg)
    order = class_order(order_kind, seed, data.n_classes)
    benchmark = data.benchmark(stream, root=cfg.root, class_order=order,
                               train_per_class=cfg.train_per_class,
                               test_per_class=cfg.test_per_class)
    setting = setting_for(cfg, benchmark)
    n_exemplars, fixed = plan(method, budget, setting, options, total_memory)
    base = dict(
        method=method,
        variant=variant or method,
        options=options or {},
        data_set=data.name,
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
    strategy = METHODS[method].build(n_exemplars, setting, options)
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
        acc.append(sum(_known(row[j]) * sizes[j] for j in range(t + 1)) / seen)
        old_n = sum(sizes[:t])
        old.append(sum(_known(row[j]) * sizes[j] for j in range(t)) / old_n if t else None)
        new.append(row[t])
    stored = METHODS[method].stored_bytes(strategy, setting)
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
        log_to_wandb(wandb_logger, record)
    return record


def log_to_wandb(logger: WandBLogger, record: dict[str, Any]) -> None:
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
    columns: list[str | int] = ["after step", *[f"experience {j}" for j in range(n)]]
    table = wandb.Table(columns=columns,
                        data=[[t + 1] + row for t, row in enumerate(record["matrix"])])
    logger.run.log({"accuracy_matrix": table})
    logger.run.summary.update({k: record[k] for k in (
        "average_incremental_accuracy", "final_accuracy", "final_old_accuracy", "snapshot_bytes",
        "exemplar_bytes", "stored_total", "model_bytes", "wall_time_s")})
    logger.close()


def record_path(out: Path, kind: str, name: str, budget: int, stream: str, seed: int,
                order: str = "fixed", data_set: str = "fmnist") -> Path:
    """Where a run's record lives; ``budget`` is the total memory for ``kind="memory"``
    (Fashion-MNIST's records keep the names they had before other data sets)."""
    safe = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    size = f"m{budget}" if kind == "memory" else f"b{budget}"
    suffix = "" if order == "fixed" else f"_{order}"
    prefix = "" if data_set == "fmnist" else f"{data_set}_"
    return (out / "runs" / kind
            / f"{prefix}{stream.replace('+', 'p')}_{safe}_{size}_s{seed}{suffix}.json")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a record is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


#: One run to make: (kind, method or variant, options, budget or total memory, stream, seed).
Job = tuple[str, str, dict[str, Any] | None, int, str, int]


def jobs_of(cfg: argparse.Namespace) -> list[Job]:
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
                        if METHODS[method].exemplars != "never":
                            jobs.append(("memory", method, None, total, stream, seed))
            else:
                for method, budget in runs_for(stream, cfg.budgets, tuple(cfg.methods)):
                    jobs.append(("headline", method, None, budget, stream, seed))
    return jobs


def run_and_write(job: Job, cfg: argparse.Namespace, path: Path) -> str:
    """Run one job, write its record atomically, and return its summary line."""
    kind, name, options, budget, stream, seed = job
    variant = name if options is not None else None  # an ablation variant of M2KD
    method = name if variant is None else "m2kd"
    total = budget if kind == "memory" else None
    record = run_one(
        method, budget, stream, seed, cfg, options, variant=variant, total_memory=total
    )
    record["kind"] = kind
    write_atomic(path, json.dumps(record, indent=1))
    if record.get("over_budget"):
        return (f"    {name} over budget: it stores {record['predicted_fixed_bytes']} bytes "
                "besides exemplars")
    return (
        f"    {name} {stream} s{seed}: {record['budget']} exemplars, stored "
        f"{record['stored_total']} bytes; final {record['final_accuracy']:.4f}, avg inc "
        f"{record['average_incremental_accuracy']:.4f}, {record['wall_time_s']:.1f} s"
    )
