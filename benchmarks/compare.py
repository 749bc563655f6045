"""M2KD beside Avalanche's fine-tuning, Replay, LwF and iCaRL on Split Fashion-MNIST.

Every method gets the same class order, backbone, optimiser, epochs, mini-batch,
exemplar budget, exemplar selection (class-balanced herding, except iCaRL's own) and
seed; only the method changes. Each run writes a JSON record, so an interrupted sweep
resumes where it stopped; ``report`` turns the records into a Markdown table, a JSON
summary and a PNG (accuracy per step for every method, and M2KD's accuracy matrix).

    python -m benchmarks.compare prepare --root data          # unpack Debian's files
    python -m benchmarks.compare run --root data --out results/fmnist --preset cpu
    python -m benchmarks.compare run --root data --out results/fmnist --preset cpu --ablation
    python -m benchmarks.compare report --out results/fmnist

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
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

warnings.filterwarnings("ignore", message="no QP solver")
warnings.filterwarnings("ignore", category=DeprecationWarning)

import torch  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics  # noqa: E402
from avalanche.training import ICaRL, LwF, Naive  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin  # noqa: E402
from torch import nn  # noqa: E402

from avalanche_m2kd import LogitAdjustedCrossEntropy, M2KDStrategy, WandBLogger  # noqa: E402
from avalanche_m2kd.data.fmnist import (  # noqa: E402
    DEBIAN_FASHION_MNIST,
    FashionMNISTNotFoundError,
    prepare_fashion_mnist,
    split_fmnist,
)
from avalanche_m2kd.exemplars import ClassBalancedBuffer, HeadInputHerding  # noqa: E402
from avalanche_m2kd.metrics import experience_accuracies  # noqa: E402
from benchmarks.backbones import FEATURE_STAGES, make_backbone  # noqa: E402

EXEMPLAR_BYTES = 28 * 28  # one Fashion-MNIST image as uint8

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(backbone="cnn", train_per_class=300, test_per_class=200, epochs=5, batch_size=64,
                lr=0.05, streams=["5x2", "2+1"], budgets=[0, 200, 1000], seeds=[0, 1, 2]),
    "quick": dict(backbone="cnn", train_per_class=100, test_per_class=100, epochs=2, batch_size=64,
                  lr=0.05, streams=["5x2", "2+1"], budgets=[0, 200], seeds=[0]),
    "gpu": dict(backbone="resnet32", train_per_class=None, test_per_class=None, epochs=30,
                batch_size=128, lr=0.1, streams=["5x2", "2+1"], budgets=[0, 200, 1000],
                seeds=[0, 1, 2]),
}

#: Methods of the headline table. Naive has no memory; Replay and iCaRL need one.
#: ``replay-la`` and ``lwf-la`` are Avalanche's Replay and LwF with M2KD's default
#: criterion, :class:`~avalanche_m2kd.LogitAdjustedCrossEntropy`, so that LwF-LA and
#: M2KD differ only in their distillation. ``m2kd-full`` is M2KD with
#: ``snapshot_mode="full"`` (copies instead of the nested store).
METHODS = ("naive", "replay", "replay-la", "lwf", "lwf-la", "icarl", "m2kd", "m2kd-full")

#: M2KD ablation variants: ``M2KDStrategy`` options on top of the defaults (nested
#: store, ``own`` slice, head-input features, batch-statistics teachers, logit
#: adjustment; the defaults themselves are the headline's ``m2kd``). ``teacher_dtype``
#: and ``mixed_precision`` are names of ``torch`` dtypes (records are JSON), turned
#: into dtypes by :func:`build_strategy`. The component
#: variants fix ``teacher_slice="cumulative"``: they were measured before ``own``
#: became the default, and are kept as they ran.
_CUM = dict(teacher_slice="cumulative")
ABLATION: dict[str, dict[str, Any]] = {
    "nested, cumulative": dict(snapshot_mode="nested", **_CUM),
    "pruned, cumulative": dict(snapshot_mode="pruned", **_CUM),
    "full, cumulative": dict(snapshot_mode="full", **_CUM),
    "no distillation (replay + LA)": dict(snapshot_mode="full", mm_weight=0.0, feat_weight=0.0, **_CUM),
    "last teacher (LwF + LA)": dict(teachers="last", snapshot_mode="full", feat_weight=0.0, **_CUM),
    "last teacher, no LA (LwF)": dict(teachers="last", snapshot_mode="full", feat_weight=0.0,
                                      logit_adjustment=0.0, **_CUM),
    "all teachers, cumulative": dict(snapshot_mode="full", feat_weight=0.0, **_CUM),
    "all teachers, own": dict(snapshot_mode="full", teacher_slice="own", feat_weight=0.0),
    "all teachers, own, 2 sampled per batch": dict(snapshot_mode="full", teacher_slice="own", feat_weight=0.0,
                                                   teacher_sample=2),
    "all teachers, own, bf16 teachers": dict(snapshot_mode="full", teacher_slice="own", feat_weight=0.0,
                                             teacher_dtype="bfloat16"),
    "m2kd-full, bf16 student": dict(snapshot_mode="full", mixed_precision="bfloat16"),
    "nested, dense between experiences": dict(restore_released_at="end_of_experience"),
    "m2kd-full, bf16 teachers": dict(snapshot_mode="full", teacher_dtype="bfloat16"),
    "full, cumulative + stage features": dict(snapshot_mode="full", feature_layers=list(FEATURE_STAGES),
                                              **_CUM),
    "full, cumulative + features from all teachers": dict(snapshot_mode="full", feature_teachers="all",
                                                          **_CUM),
    "full, cumulative, no LA": dict(snapshot_mode="full", logit_adjustment=0.0, **_CUM),
    "full, cumulative, teachers with running BN statistics": dict(snapshot_mode="full", teacher_bn="running",
                                                                  **_CUM),
}


def runs_for(stream: str, budgets: list[int], methods: tuple[str, ...] = METHODS) -> list[tuple[str, int]]:
    """The (method, budget) pairs of the headline table for one stream."""
    pairs = []
    for budget in budgets:
        for method in methods:
            if method == "naive" and budget > 0 or method in ("replay", "replay-la", "icarl") and budget == 0:
                continue
            pairs.append((method, budget))
    return pairs


# --------------------------------------------------------------------------- runs
def _evaluator(loggers: Optional[list] = None) -> EvaluationPlugin:
    return EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=loggers or [])


def _shared_buffer(budget: int) -> list:
    """The replay plugin every buffer-using method shares: class-balanced herding."""
    if budget == 0:
        return []
    return [ReplayPlugin(budget, storage_policy=ClassBalancedBuffer(budget, HeadInputHerding()))]


def build_strategy(method: str, budget: int, cfg: argparse.Namespace, n_classes: int, first_classes: int,
                   options: Optional[dict[str, Any]] = None, loggers: Optional[list] = None):
    """The Avalanche strategy of ``method`` with the shared settings of ``cfg``."""
    common = dict(train_mb_size=cfg.batch_size, train_epochs=cfg.epochs, eval_mb_size=256,
                  device=cfg.device, evaluator=_evaluator(loggers))

    def sgd(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)

    criterion = nn.CrossEntropyLoss()
    if method == "icarl":
        net = make_backbone(cfg.backbone, n_classes=n_classes, incremental_head=False, width=cfg.width)
        return ICaRL(feature_extractor=net.feature_extractor, classifier=net.classifier,
                     optimizer=torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9,
                                               weight_decay=cfg.weight_decay),
                     memory_size=budget, buffer_transform=None, fixed_memory=True, **common)
    model = make_backbone(cfg.backbone, initial_classes=first_classes, width=cfg.width)
    if method == "naive":
        return Naive(model=model, optimizer=sgd(model), criterion=criterion, **common)
    if method.endswith("-la"):
        criterion = LogitAdjustedCrossEntropy()
        method = method[: -len("-la")]
    if method == "replay":
        return Naive(model=model, optimizer=sgd(model), criterion=criterion, plugins=_shared_buffer(budget), **common)
    if method == "lwf":
        # Avalanche's LwF loss has no T^2 factor: alpha = T^2 gives it M2KD's scale.
        return LwF(model=model, optimizer=sgd(model), criterion=criterion, alpha=cfg.temperature ** 2,
                   temperature=cfg.temperature, plugins=_shared_buffer(budget), **common)
    if method in ("m2kd", "m2kd-full"):
        options = dict(options or {})
        options.setdefault("temperature", cfg.temperature)
        if method == "m2kd-full":
            options.setdefault("snapshot_mode", "full")
        plugins = options.pop("plugins", None)
        for key in ("teacher_dtype", "mixed_precision"):  # dtype names in the JSON records
            if options.get(key) is not None:
                options[key] = getattr(torch, options[key])
        return M2KDStrategy(model, sgd(model), criterion, mem_size=budget, plugins=plugins, **options, **common)
    raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}")


def _model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def _memory_bytes(method: str, strategy) -> tuple[int, int]:
    """(snapshot bytes, exemplar bytes) the method holds after training."""
    exemplars = 0
    for plugin in strategy.plugins:
        if isinstance(plugin, ReplayPlugin):
            exemplars = len(plugin.storage_policy.buffer)
        if type(plugin).__name__ == "_ICaRLPlugin":
            exemplars = sum(len(x) for x in plugin.x_memory)
    if method.startswith("m2kd"):
        snapshots = strategy.snapshots.nbytes()
    elif method in ("lwf", "lwf-la", "icarl"):
        snapshots = _model_bytes(strategy.model)  # the one previous model they keep
    else:
        snapshots = 0
    return int(snapshots), exemplars * EXEMPLAR_BYTES


def forgetting(matrix: list[list[Optional[float]]]) -> list[float]:
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
            options: Optional[dict[str, Any]] = None, variant: Optional[str] = None) -> dict[str, Any]:
    """Train ``method`` over ``stream`` and return its record (see the module docstring)."""
    torch.manual_seed(seed)
    benchmark = split_fmnist(stream, dataset_root=cfg.root, max_train_per_class=cfg.train_per_class,
                             max_test_per_class=cfg.test_per_class)
    first = len(benchmark.train_stream[0].classes_in_this_experience)
    wandb_logger = None
    if getattr(cfg, "wandb", False):
        config = {k: v for k, v in vars(cfg).items() if k != "func"}
        config.update(method=method, variant=variant or method, budget=budget, stream=stream, seed=seed,
                      options={k: v for k, v in (options or {}).items() if k != "plugins"})
        wandb_logger = WandBLogger(project_name=cfg.wandb_project, config=config, dir=cfg.out,
                                   run_name=f"{variant or method}-{stream}-b{budget}-s{seed}")
    strategy = build_strategy(method, budget, cfg, benchmark.n_classes, first, options,
                              loggers=[wandb_logger] if wandb_logger else None)
    sizes = [len(e.dataset) for e in benchmark.test_stream]
    matrix: list[list[Optional[float]]] = []
    start = time.perf_counter()
    train_time = 0.0
    for exp in benchmark.train_stream:
        t = exp.current_experience
        t0 = time.perf_counter()
        strategy.train(exp, num_workers=0)
        train_time += time.perf_counter() - t0
        accs = experience_accuracies(strategy.eval(benchmark.test_stream[: t + 1], num_workers=0))
        matrix.append([accs[j] if j <= t else None for j in range(len(sizes))])
        print(f"  [{method}/{budget}/{stream}/s{seed}{'/' + variant if variant else ''}] step {t + 1}: "
              f"{[round(accs[j], 3) for j in range(t + 1)]}", flush=True)
    acc, old, new = [], [], []
    for t, row in enumerate(matrix):
        seen = sum(sizes[: t + 1])
        acc.append(sum(row[j] * sizes[j] for j in range(t + 1)) / seen)
        old_n = sum(sizes[:t])
        old.append(sum(row[j] * sizes[j] for j in range(t)) / old_n if t else None)
        new.append(row[t])
    snapshot_bytes, exemplar_bytes = _memory_bytes(method, strategy)
    record = dict(
        method=method, variant=variant or method, options=options or {}, budget=budget, stream=stream,
        seed=seed, accuracy=acc, old_accuracy=old, new_accuracy=new, forgetting=forgetting(matrix),
        matrix=matrix, average_incremental_accuracy=sum(acc) / len(acc), final_accuracy=acc[-1],
        final_old_accuracy=old[-1], wall_time_s=time.perf_counter() - start, train_time_s=train_time,
        snapshot_bytes=snapshot_bytes, exemplar_bytes=exemplar_bytes,
        model_bytes=_model_bytes(strategy.model),
        config={k: v for k, v in vars(cfg).items() if k not in ("func",)},
        torch=torch.__version__, threads=torch.get_num_threads(),
    )
    if wandb_logger is not None:
        _log_to_wandb(wandb_logger, record)
    return record


def _log_to_wandb(logger: WandBLogger, record: dict[str, Any]) -> None:
    """Per-step accuracies, the accuracy matrix and the summary of ``record``, then close."""
    import wandb

    for t, (acc, old, new) in enumerate(zip(record["accuracy"], record["old_accuracy"], record["new_accuracy"])):
        row = {"step": t + 1, "accuracy": acc, "new_accuracy": new, "forgetting": record["forgetting"][t]}
        if old is not None:
            row["old_accuracy"] = old
        logger.run.log(row)
    n = len(record["matrix"])
    table = wandb.Table(columns=["after step"] + [f"experience {j}" for j in range(n)],
                        data=[[t + 1] + row for t, row in enumerate(record["matrix"])])
    logger.run.log({"accuracy_matrix": table})
    logger.run.summary.update({k: record[k] for k in (
        "average_incremental_accuracy", "final_accuracy", "final_old_accuracy", "snapshot_bytes",
        "exemplar_bytes", "model_bytes", "wall_time_s")})
    logger.close()


def _record_path(out: Path, kind: str, name: str, budget: int, stream: str, seed: int) -> Path:
    safe = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    return out / "runs" / kind / f"{stream.replace('+', 'p')}_{safe}_b{budget}_s{seed}.json"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cmd_run(cfg: argparse.Namespace) -> None:
    """Run every missing (method or variant, budget, stream, seed) and write its record."""
    out = Path(cfg.out)
    jobs: list[tuple[str, str, Optional[dict], int, str, int]] = []
    for seed in cfg.seeds:
        for stream in cfg.streams:
            if cfg.ablation:
                for name, options in ABLATION.items():
                    if cfg.variants and name not in cfg.variants:
                        continue
                    for budget in cfg.ablation_budgets:
                        jobs.append(("ablation", name, options, budget, stream, seed))
            else:
                for method, budget in runs_for(stream, cfg.budgets, tuple(cfg.methods)):
                    jobs.append(("headline", method, None, budget, stream, seed))
    start = time.perf_counter()
    for i, (kind, name, options, budget, stream, seed) in enumerate(jobs):
        path = _record_path(out, kind, name, budget, stream, seed)
        if path.exists():
            continue
        method = "m2kd" if kind == "ablation" else name
        print(f"[{i + 1}/{len(jobs)}] {kind} {name} budget={budget} stream={stream} seed={seed} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        record = run_one(method, budget, stream, seed, cfg, options, variant=name if kind == "ablation" else None)
        record["kind"] = kind
        _write_atomic(path, json.dumps(record, indent=1))
        print(f"    final {record['final_accuracy']:.4f}, avg inc {record['average_incremental_accuracy']:.4f}, "
              f"{record['wall_time_s']:.1f} s", flush=True)
    print(f"done: {len(jobs)} runs in {out / 'runs'} ({time.perf_counter() - start:.0f} s)")


# --------------------------------------------------------------------------- report
def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every run record under ``out/runs``."""
    return [json.loads(p.read_text()) for p in sorted((out / "runs").rglob("*.json"))]


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group records by (kind, stream, budget, variant) with means and stds over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r.get("kind", "headline"), r["stream"], r["budget"], r["variant"]), []).append(r)
    rows = []
    for (kind, stream, budget, variant), rs in groups.items():
        rows.append(dict(
            kind=kind, stream=stream, budget=budget, variant=variant, seeds=sorted(r["seed"] for r in rs),
            average_incremental_accuracy=[r["average_incremental_accuracy"] for r in rs],
            final_accuracy=[r["final_accuracy"] for r in rs],
            final_old_accuracy=[r["final_old_accuracy"] for r in rs],
            final_new_accuracy=[r["new_accuracy"][-1] for r in rs],
            final_forgetting=[r["forgetting"][-1] for r in rs],
            accuracy_per_step=[statistics.mean(v) for v in zip(*(r["accuracy"] for r in rs))],
            old_accuracy_per_step=[None if v[0] is None else statistics.mean(v)
                                   for v in zip(*(r["old_accuracy"] for r in rs))],
            new_accuracy_per_step=[statistics.mean(v) for v in zip(*(r["new_accuracy"] for r in rs))],
            wall_time_s=statistics.mean(r["wall_time_s"] for r in rs),
            snapshot_bytes=rs[0]["snapshot_bytes"], exemplar_bytes=rs[0]["exemplar_bytes"],
            model_bytes=rs[0]["model_bytes"],
        ))
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (r["kind"], r["stream"], r["budget"], order.get(r["variant"], 99), r["variant"]))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The Markdown tables of :func:`summarize`'s rows, one per (kind, stream)."""
    lines: list[str] = []
    current = None
    for r in rows:
        if (r["kind"], r["stream"]) != current:
            current = (r["kind"], r["stream"])
            lines += ["", f"**{r['kind']}, stream {r['stream']}** (mean ± std over the seeds run)", "",
                      "| method | budget | seeds | avg. incr. acc. | final acc. | final old | final new | "
                      "forgetting | wall s | snapshots KiB | exemplars KiB |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines.append(
            f"| {r['variant']} | {r['budget']} | {len(r['seeds'])} | {_mean_std(r['average_incremental_accuracy'])} | "
            f"{_mean_std(r['final_accuracy'])} | {_mean_std(r['final_old_accuracy'])} | "
            f"{_mean_std(r['final_new_accuracy'])} | {_mean_std(r['final_forgetting'])} | "
            f"{r['wall_time_s']:.0f} | {r['snapshot_bytes'] / 1024:.0f} | {r['exemplar_bytes'] / 1024:.0f} |"
        )
    for stream, budget in sorted({(r["stream"], r["budget"]) for r in rows if r["kind"] == "headline"}):
        group = [r for r in rows if r["kind"] == "headline" and (r["stream"], r["budget"]) == (stream, budget)]
        steps = len(group[0]["new_accuracy_per_step"])
        lines += ["", f"**headline, stream {stream}, {budget} exemplars: old / new-class accuracy after each step** "
                  "(mean over the seeds run)", "",
                  "| method | " + " | ".join(f"step {t + 1}" for t in range(steps)) + " |",
                  "|---|" + "---|" * steps]
        for r in group:
            cells = [f"{'–' if o is None else f'{o:.2f}'} / {n:.2f}"
                     for o, n in zip(r["old_accuracy_per_step"], r["new_accuracy_per_step"])]
            lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines).strip() + "\n"


def plot(records: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy per step of every headline method (one panel per stream and budget) and
    the accuracy matrix of M2KD's first seed on the longest stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = [r for r in rows if r["kind"] == "headline"] or rows
    panels = sorted({(r["stream"], r["budget"]) for r in head})
    m2kd = [r for r in records if r["method"] == "m2kd" and r.get("kind", "headline") == "headline"] or \
        [r for r in records if r["method"] == "m2kd"]
    n = len(panels) + (1 if m2kd else 0)
    cols = min(n, 4)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.2 * cols, 3.4 * math.ceil(n / cols)),
                             squeeze=False)
    for ax, (stream, budget) in zip(axes.flat, panels):
        for r in head:
            if (r["stream"], r["budget"]) == (stream, budget):
                steps = range(1, len(r["accuracy_per_step"]) + 1)
                color = f"C{METHODS.index(r['variant'])}" if r["variant"] in METHODS else None
                ax.plot(steps, r["accuracy_per_step"], marker="o", ms=3, label=r["variant"], color=color)
        ax.set(title=f"{stream}, {budget} exemplars", xlabel="step", ylabel="accuracy (seen classes)", ylim=(0, 1))
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


def cmd_report(cfg: argparse.Namespace) -> None:
    """Write ``results.md``, ``results.json`` and ``results.png`` from the run records."""
    out = Path(cfg.out)
    records = load_records(out)
    if not records:
        raise SystemExit(f"error: no run records under {out / 'runs'}; run `python -m benchmarks.compare run` first")
    rows = summarize(records)
    (out / "results.md").write_text(markdown(rows))
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    plot(records, rows, out / "results.png")
    print(markdown(rows))
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'}")


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
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
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
    run.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    run.add_argument("--streams", nargs="+")
    run.add_argument("--budgets", type=int, nargs="+")
    run.add_argument("--seeds", type=int, nargs="+")
    run.add_argument("--backbone", choices=["cnn", "resnet20", "resnet32"])
    run.add_argument("--width", type=int, default=32, help="CNN width")
    run.add_argument("--train-per-class", type=int)
    run.add_argument("--test-per-class", type=int)
    run.add_argument("--epochs", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--lr", type=float)
    run.add_argument("--weight-decay", type=float, default=5e-4)
    run.add_argument("--temperature", type=float, default=2.0)
    run.add_argument("--device", default="cpu")
    run.add_argument("--wandb", action="store_true",
                     help="log every run to Weights & Biases through avalanche_m2kd.WandBLogger")
    run.add_argument("--wandb-project", default="avalanche-m2kd-compare")
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="tables and plots from the records")
    rep.add_argument("--out", default="results/fmnist")
    rep.set_defaults(func=cmd_report)
    return p


def parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parse ``argv``, filling options left unset from the preset."""
    cfg = build_parser().parse_args(argv)
    if cfg.command == "run":
        for key, value in PRESETS[cfg.preset].items():
            if getattr(cfg, key, None) is None:
                setattr(cfg, key, copy.deepcopy(value))
        if cfg.train_per_class is None and cfg.preset != "gpu":
            cfg.train_per_class = PRESETS[cfg.preset]["train_per_class"]
    return cfg


def main(argv: Optional[list[str]] = None) -> None:
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
