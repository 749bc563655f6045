"""M2KD on Split CIFAR-100 with ResNet-32: the paper-style class-incremental run.

ResNet-32 (Avalanche's ``make_icarl_net``, initialised as in Avalanche's iCaRL
baseline), a 2,000-exemplar class-balanced memory, 70 epochs per experience, B0/10
(10 experiences of 10 classes) in the PyCIL "seed 1993" class order by default.
After each experience the model is evaluated on every class seen so far; the script
prints the per-step accuracy, the average incremental accuracy (mean over steps,
first included) and the final accuracy, and returns them from :func:`main`.

Optimiser (ours, a common CE recipe for ResNet-32 on CIFAR-100 rather than iCaRL's
lr 2.0 sigmoid/BCE recipe): SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 128;
the learning rate is divided by 10 at 70 % and 90 % of the epochs (49 and 63 of 70,
the milestones of Avalanche's iCaRL baseline) and reset at each experience
(Avalanche's ``LRSchedulerPlugin``).

CIFAR-100 is read from ``--data-root`` (torchvision's ``cifar-100-python`` folder, or
the official ``cifar-100-python.tar.gz``); when missing it is downloaded once, and if
that fails the script says where it looked and exits with status 2.

    python examples/split_cifar100.py --data-root ~/data/cifar100            # B0/10
    python examples/split_cifar100.py --n-experiences 6 --first-exp-classes 50  # B50, 5 steps
    python examples/split_cifar100.py --class-order icarl --device cuda --wandb

W&B: ``--wandb`` logs through ``avalanche_m2kd.WandBLogger`` (Avalanche 0.6.0's own
``WandBLogger`` fails with wandb >= 0.31: it calls the removed ``wandb.util.generate_id``
and ``wandb.viz``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="no QP solver")  # printed by an Avalanche dependency

import torch  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics  # noqa: E402
from avalanche.logging import InteractiveLogger, TextLogger  # noqa: E402
from avalanche.models import initialize_icarl_net, make_icarl_net  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin, LRSchedulerPlugin, ReplayPlugin  # noqa: E402
from torch import nn  # noqa: E402
from torch.optim.lr_scheduler import MultiStepLR  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from avalanche_m2kd import M2KDStrategy, WandBLogger  # noqa: E402
from avalanche_m2kd.data.cifar import (  # noqa: E402
    CIFAR100_CLASS_ORDERS,
    CIFAR100NotFoundError,
    split_cifar100,
)
from avalanche_m2kd.metrics import experience_accuracies, old_new_accuracy  # noqa: E402

#: Outputs of ResNet-32's three residual stages (16x32x32, 32x16x16, 64x8x8) in
#: ``make_icarl_net``: the SPEC's default feature levels for ResNets.
RESNET32_STAGES = ("feature_extractor.1", "feature_extractor.2", "feature_extractor.3")

EXEMPLAR_BYTES = 3 * 32 * 32  # one 32x32 RGB exemplar stored as uint8 (SPEC)
_STREAM_ACC = "Top1_Acc_Stream/eval_phase/test_stream/Task000"
_STREAM_FORGETTING = "StreamForgetting/eval_phase/test_stream"


def build_parser() -> argparse.ArgumentParser:
    """The command-line options, with their defaults and sources."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = p.add_argument_group("benchmark")
    data.add_argument("--n-experiences", type=int, default=10,
                      help="experiences, the first included (B0/10: 10; B50 + 5 steps: 6)")
    data.add_argument("--first-exp-classes", type=int, default=None,
                      help="classes of the first experience (e.g. 50 for B50); "
                           "default: equal split")
    data.add_argument("--class-order", choices=sorted(CIFAR100_CLASS_ORDERS), default="pycil")
    data.add_argument("--data-root", default=None,
                      help="folder holding cifar-100-python/ "
                           "(default: Avalanche's ~/.avalanche/data/cifar100)")
    data.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                      help="try one download when the files are missing")
    data.add_argument("--max-train-per-class", type=int, default=None,
                      help="keep the first N training images of each class (quick runs)")

    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=70, help="epochs per experience (iCaRL: 70)")
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--eval-batch-size", type=int, default=256)
    train.add_argument("--lr", type=float, default=0.1)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=5e-4)
    train.add_argument("--lr-milestones", type=int, nargs="*", default=None,
                       help="epochs where the lr is divided by 1/--lr-gamma "
                            "(default: 70%% and 90%% of --epochs)")
    train.add_argument("--lr-gamma", type=float, default=0.1)
    train.add_argument("--device", default="auto",
                       help="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    train.add_argument("--num-workers", type=int, default=4, help="data-loader workers")
    train.add_argument("--seed", type=int, default=1993)

    m2kd = p.add_argument_group("M2KD")
    m2kd.add_argument("--mem-size", type=int, default=2000, help="exemplars (0: exemplar-free)")
    m2kd.add_argument("--snapshot-mode", choices=["nested", "pruned", "full"], default="nested")
    m2kd.add_argument("--feature-layers", nargs="+", default=list(RESNET32_STAGES),
                      help="modules of the multi-level term (default: ResNet-32's residual stages)")

    log = p.add_argument_group("logging")
    log.add_argument("--wandb", action="store_true", help="log to Weights & Biases")
    log.add_argument("--wandb-project", default="avalanche-m2kd")
    log.add_argument("--log-dir", default=None,
                     help="write Avalanche's text log (log.txt) "
                          "and the results (results.json) here")
    log.add_argument("--quiet", action="store_true", help="no progress bars (InteractiveLogger)")
    return p


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_milestones(epochs: int) -> list[int]:
    """The default lr milestones: 70 % and 90 % of the epochs (49 and 63 of 70, as iCaRL).

    Example:
        >>> lr_milestones(70), lr_milestones(1)
        ([49, 63], [1])
    """
    return sorted({round(0.7 * epochs), round(0.9 * epochs)} - {0})


def _exemplar_count(strategy) -> int:
    for plugin in strategy.plugins:
        if isinstance(plugin, ReplayPlugin):
            return len(plugin.storage_policy.buffer)
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    train_dataset: Dataset | None = None,
    test_dataset: Dataset | None = None,
) -> dict[str, Any]:
    """Run M2KD over Split CIFAR-100 and return the results.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when ``None``).
        train_dataset: a dataset to use instead of CIFAR-100's training files
            (CIFAR-shaped images with a ``targets`` list; tests inject a tiny one).
        test_dataset: the matching test set.

    Returns:
        ``accuracy`` (per step, on all classes seen so far), ``old_accuracy`` and
        ``new_accuracy`` (per step; ``None`` at the first), ``forgetting`` (per step),
        ``classes`` (original class ids of each step), ``average_incremental_accuracy``,
        ``final_accuracy``, ``snapshot_bytes``, ``exemplar_bytes``, ``wall_time_s``
        and ``args``.

    Exits with status 2 (a message on stderr, no traceback) when CIFAR-100 is missing.
    """
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    device = _device(args.device)

    try:
        benchmark = split_cifar100(
            args.n_experiences,
            first_exp_classes=args.first_exp_classes,
            class_order=args.class_order,
            dataset_root=args.data_root,
            download=args.download,
            train_dataset=train_dataset,
            test_dataset=test_dataset,
            max_train_per_class=args.max_train_per_class,
        )
    except CIFAR100NotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValueError as exc:  # a split that does not divide the classes, ...
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    model = make_icarl_net(num_classes=benchmark.n_classes)
    model.apply(initialize_icarl_net)  # as Avalanche's iCaRL baseline
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    milestones = (
        args.lr_milestones if args.lr_milestones is not None else lr_milestones(args.epochs)
    )
    scheduler = LRSchedulerPlugin(MultiStepLR(optimizer, milestones, gamma=args.lr_gamma))

    loggers: list = [] if args.quiet else [InteractiveLogger()]
    log_dir = Path(args.log_dir) if args.log_dir else None
    log_file = None
    wandb_logger = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(log_dir / "log.txt", "w")  # noqa: SIM115 (closed in `finally` below)
        loggers.append(TextLogger(log_file))
    if args.wandb:
        run_name = (
            f"m2kd-{args.snapshot_mode}-b{args.first_exp_classes or 0}-"
            f"{args.n_experiences}exp-{args.class_order}-s{args.seed}"
        )
        wandb_logger = WandBLogger(
            project_name=args.wandb_project, run_name=run_name, config=vars(args),
            dir=str(log_dir) if log_dir else None,
        )
        loggers.append(wandb_logger)
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        loggers=loggers,
    )
    strategy = M2KDStrategy(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        train_mb_size=args.batch_size,
        train_epochs=args.epochs,
        eval_mb_size=args.eval_batch_size,
        device=device,
        plugins=[scheduler],
        evaluator=evaluator,
        feature_layers=args.feature_layers,
        mem_size=args.mem_size,
        snapshot_mode=args.snapshot_mode,
    )

    sizes = [len(exp.dataset) for exp in benchmark.test_stream]
    order = list(benchmark.classes_order_original_ids)
    results: dict[str, Any] = {
        "accuracy": [], "old_accuracy": [], "new_accuracy": [], "forgetting": [], "classes": [],
    }
    start = time.perf_counter()
    try:
        for exp in benchmark.train_stream:
            t = exp.current_experience
            strategy.train(exp, num_workers=args.num_workers)
            metrics = strategy.eval(benchmark.test_stream[: t + 1], num_workers=args.num_workers)
            acc = float(metrics[_STREAM_ACC])
            old, new = old_new_accuracy(experience_accuracies(metrics), sizes, t)
            classes = sorted(order[c] for c in exp.classes_in_this_experience)
            results["accuracy"].append(acc)
            results["old_accuracy"].append(old)
            results["new_accuracy"].append(new)
            results["forgetting"].append(float(metrics.get(_STREAM_FORGETTING, 0.0)))
            results["classes"].append(classes)
            print(
                f"step {t + 1}/{benchmark.n_experiences}: {len(classes)} new classes, "
                f"{sum(len(c) for c in results['classes'])} seen; accuracy {acc:.4f} "
                f"(old {'  -   ' if old is None else f'{old:.4f}'}, new {new:.4f}), "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    finally:
        if log_file is not None:
            log_file.close()
        if wandb_logger is not None:
            wandb_logger.close()

    accs = results["accuracy"]
    results.update(
        average_incremental_accuracy=sum(accs) / len(accs),
        final_accuracy=accs[-1],
        snapshot_bytes=int(strategy.snapshots.nbytes()),
        exemplar_bytes=_exemplar_count(strategy) * EXEMPLAR_BYTES,
        wall_time_s=time.perf_counter() - start,
        args=vars(args),
    )
    print(
        f"average incremental accuracy {results['average_incremental_accuracy']:.4f}, "
        f"final accuracy {results['final_accuracy']:.4f}; snapshots "
        f"{results['snapshot_bytes'] / 2**20:.2f} MiB, exemplars "
        f"{results['exemplar_bytes'] / 2**20:.2f} MiB; {results['wall_time_s']:.0f} s"
    )
    if log_dir is not None:
        (log_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
