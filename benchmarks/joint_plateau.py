"""How many epochs the harness's regime needs: naive joint training's test accuracy per epoch.

The comparison must train each experience long enough that what a method forgets is not
hidden by what none of them had time to learn. This script trains the harness's backbone
with its shared optimiser (:class:`benchmarks.methods.Setting`: SGD, momentum 0.9, the
same learning rate, weight decay and mini-batch) on *all* the stream's training data at
once (joint training, the usual upper bound), evaluates on the test set after every
epoch, and reports per seed the plateau (the mean accuracy of the last 5 of the
``--epochs`` run) and the first epoch from which the accuracy stays within
``--tolerance`` (0.01) of it:

    python -m benchmarks.joint_plateau --root data --train-per-class 1000 \\
        --test-per-class 500 --epochs 30 --seeds 0 1 2 --out results/joint-plateau

Each seed draws its own initial weights and mini-batch order. The data are
:func:`avalanche_m2kd.data.fashion_mnist_tensors` (Split Fashion-MNIST's samples and
values); the loop is plain PyTorch (no Avalanche strategy), which trains exactly what
a single-experience ``Naive`` run trains.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import nn

from avalanche_m2kd.data import fashion_mnist_tensors
from benchmarks import records
from benchmarks.methods import Setting, seed_everything


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``(x, y)``."""
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
                   for i in range(0, len(x), batch))
    return hits / len(x)


#: ``--schedule`` choices: the learning rate held, or annealed to 0 over the run's epochs
#: (``CosineAnnealingLR(T_max=epochs)``, stepped after each epoch).
SCHEDULES = ("constant", "cosine")


def train_jointly(setting: Setting, data: tuple[torch.Tensor, ...], epochs: int,
                  seed: int, schedule: str = "constant") -> list[float]:
    """Test accuracy after each of ``epochs`` epochs of joint training from seed ``seed``,
    with the learning rate of ``schedule`` (:data:`SCHEDULES`)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"Expected a schedule in {SCHEDULES}, but got {schedule!r}")
    x, y, test_x, test_y = data
    seed_everything(seed)
    model = setting.model("fixed")
    optimizer = setting.optimizer(model)
    annealing = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
                 if schedule == "cosine" else None)
    loss = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=order).split(setting.batch_size):
            optimizer.zero_grad()
            loss(model(x[idx]), y[idx]).backward()
            optimizer.step()
        if annealing is not None:
            annealing.step()
        curve.append(accuracy(model, test_x, test_y))
    return curve


#: Epochs at the end of a curve whose mean accuracy is its plateau.
PLATEAU_EPOCHS = 5


def plateau(curve: list[float]) -> float:
    """The curve's plateau: its mean accuracy over its last :data:`PLATEAU_EPOCHS` epochs
    (test accuracy moves from epoch to epoch at a constant learning rate: the best
    epoch would overstate it)."""
    tail = curve[-PLATEAU_EPOCHS:]
    return sum(tail) / len(tail)


def plateau_epoch(curve: list[float], tolerance: float) -> int:
    """The first epoch (1-based) from which the accuracy stays within ``tolerance`` of
    the :func:`plateau`: every later epoch's accuracy too, so a lucky early epoch does
    not count.

    Example:
        >>> plateau_epoch([0.70, 0.845, 0.80, 0.845, 0.85, 0.849, 0.85, 0.846], 0.01)
        4
    """
    level = plateau(curve) - tolerance
    first = len(curve)
    while first > 0 and curve[first - 1] >= level:
        first -= 1
    return first + 1


def shortest_within(record: dict[str, Any]) -> int | None:
    """Of a multi-length record (``--epochs E1 E2 ...``), the fewest epochs whose final
    accuracy, averaged over the seeds, is within the tolerance of the longest run's.

    Example:
        >>> finals = ((2, 0.80), (4, 0.845), (8, 0.85))
        >>> runs = [dict(seed=0, epochs=e, accuracy=[a]) for e, a in finals]
        >>> shortest_within(dict(runs=runs, tolerance=0.01))
        4
    """
    lengths = sorted({r["epochs"] for r in record["runs"]})
    finals = {e: [r["accuracy"][-1] for r in record["runs"] if r["epochs"] == e] for e in lengths}
    means = {e: sum(v) / len(v) for e, v in finals.items()}
    best = means[lengths[-1]]
    return next((e for e in lengths if means[e] >= best - record["tolerance"]), None)


def _lengths_markdown(record: dict[str, Any]) -> str:
    lengths = sorted({r["epochs"] for r in record["runs"]})
    final = {(r["seed"], r["epochs"]): r["accuracy"][-1] for r in record["runs"]}
    rows = [[str(s), *(f"{final[s, e]:.3f}" for e in lengths)] for s in record["seeds"]]
    rows.append(["mean", *(f"{sum(final[s, e] for s in record['seeds']) / len(record['seeds']):.3f}"
                           for e in lengths)])
    lines = [
        f"Joint training on Split Fashion-MNIST's {record['train_images_per_class']} training "
        f"images per class (test: {record['test_images_per_class']} per class), "
        f"{record['backbone']}, SGD lr {record['lr']} annealed to 0 over each run "
        f"({record['schedule']}), batch {record['batch_size']}: final test accuracy of runs "
        "of each length,",
        "",
        *records.table(["seed", *(f"{e} epochs" for e in lengths)], rows),
        "",
        f"The fewest epochs within {record['tolerance']} of the {lengths[-1]}-epoch runs' "
        f"mean: **{shortest_within(record)}**.",
    ]
    return "\n".join(lines)


def markdown(record: dict[str, Any]) -> str:
    """The record's table: per seed, the accuracy at a few epochs, the plateau and its
    epoch; for runs of several lengths (``--epochs E1 E2 ...``), each length's final
    accuracy and the fewest epochs within the tolerance of the longest."""
    if len({r.get("epochs", record["epochs"]) for r in record["runs"]}) > 1:
        return _lengths_markdown(record)
    shown = sorted({e for e in (1, 2, 4, 5, 8, 10, 15, 20, 30, 40) if e <= record["epochs"]}
                   | {record["epochs"]})
    head = ["seed", *(f"epoch {e}" for e in shown), "plateau", "within tol. from epoch"]
    lines = [
        f"Joint training on Split Fashion-MNIST's {record['train_images_per_class']} training "
        f"images per class (test: {record['test_images_per_class']} per class), "
        f"{record['backbone']}, SGD lr {record['lr']} ({record.get('schedule', 'constant')}), "
        f"batch {record['batch_size']}; "
        f"tolerance {record['tolerance']}:",
        "",
    ]
    rows = []
    for run in record["runs"]:
        cells = [str(run["seed"]), *(f"{run['accuracy'][e - 1]:.3f}" for e in shown),
                 f"{plateau(run['accuracy']):.3f}", str(run["plateau_epoch"])]
        if run["plateau_epoch"] > record["epochs"] - PLATEAU_EPOCHS:  # still rising?
            cells[-1] += " (near the end: more epochs needed to tell)"
        rows.append(cells)
    return "\n".join(lines + records.table(head, rows))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``python -m benchmarks.joint_plateau``; returns the record."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.joint_plateau",
                                description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data", help="dataset root holding FashionMNIST/raw/")
    p.add_argument("--train-per-class", type=int, default=1000)
    p.add_argument("--test-per-class", type=int, default=500)
    p.add_argument("--epochs", type=int, nargs="+", default=[30],
                   help="epochs of each run; several: one run per length and seed")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--backbone", default="cnn")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--out", help="write DIR/results.json")
    args = p.parse_args(argv)
    x, y = fashion_mnist_tensors(args.root, True, args.train_per_class)
    test_x, test_y = fashion_mnist_tensors(args.root, False, args.test_per_class)
    setting = Setting(n_classes=10, experience_classes=(tuple(range(10)),),
                      backbone=args.backbone, width=args.width, batch_size=args.batch_size,
                      lr=args.lr)
    record = records.header("joint_plateau", argv)
    record.update(train_images_per_class=args.train_per_class,
                  test_images_per_class=args.test_per_class, epochs=max(args.epochs),
                  lengths=args.epochs, schedule=args.schedule,
                  seeds=args.seeds, backbone=args.backbone, width=args.width,
                  batch_size=args.batch_size, lr=args.lr, tolerance=args.tolerance,
                  threads=torch.get_num_threads(), torch=torch.__version__, runs=[])
    for seed in args.seeds:
        for epochs in args.epochs:
            start = time.perf_counter()
            curve = train_jointly(setting, (x, y, test_x, test_y), epochs, seed, args.schedule)
            record["runs"].append(dict(seed=seed, epochs=epochs, accuracy=curve,
                                       seconds=time.perf_counter() - start,
                                       plateau_epoch=plateau_epoch(curve, args.tolerance)))
            print(f"seed {seed}, {epochs} epochs: {[round(a, 3) for a in curve]}", flush=True)
    print(markdown(record))
    if args.out:
        records.write(record, args.out)
    return record


if __name__ == "__main__":
    main()
