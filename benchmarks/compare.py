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
import multiprocessing
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="no QP solver")
warnings.filterwarnings("ignore", category=DeprecationWarning)

from avalanche_m2kd.data.fmnist import DEBIAN_FASHION_MNIST  # noqa: E402
from benchmarks.ablation import ABLATION  # noqa: E402
from benchmarks.data_sets import DATA_SETS  # noqa: E402
from benchmarks.methods import METHODS as REGISTRY  # noqa: E402
from benchmarks.presets import DEFAULT_MEMORY_EXEMPLARS, PRESETS  # noqa: E402
from benchmarks.report import load_records, markdown, write_report  # noqa: E402, F401
from benchmarks.runs import (  # noqa: E402, F401 (the harness's parts, for scripts and tests)
    CLASS_ORDERS,
    LR_SCHEDULES,
    class_order,
    data_set_of,
    default_total_memory,
    jobs_of,
    record_path,
    run_and_write,
    run_one,
)

#: Methods of the headline table, in its order (:data:`benchmarks.methods.METHODS`).
#: Naive has no memory; Replay, iCaRL, ER-ACE, DER and BiC need one. ``replay-la`` and
#: ``lwf-la`` are Avalanche's Replay and LwF with M2KD's default criterion,
#: :class:`~avalanche_m2kd.LogitAdjustedCrossEntropy` at Menon et al.'s ``tau = 1``, M2KD's
#: default until 0.2 (``replay-la-0.75``: at M2KD's default since, to check the peer is
#: not held back by its ``tau``). ``m2kd-full`` is M2KD with ``snapshot_mode="full"``.
#: ``bic-union`` is BiC drawing its mini-batches uniformly from new data and memory
#: (:class:`benchmarks.methods.bic.BiCMethod`'s ``sampling``), the check that found
#: Avalanche's half-memory batches the better choice (:doc:`/benchmarks/peers`).
METHODS = tuple(REGISTRY)


def cmd_run(cfg: argparse.Namespace) -> None:
    """Run every missing (method or variant, budget or total memory, stream, seed) and write
    its record; with ``--workers N``, N runs side by side, each in a fresh process."""
    out = Path(cfg.out)
    jobs = jobs_of(cfg)
    start = time.perf_counter()
    todo = []
    for i, job in enumerate(jobs):
        kind, name, _, budget, stream, seed = job
        path = record_path(out, kind, name, budget, stream, seed, cfg.class_order,
                           data_set_of(cfg).name)
        if not path.exists():
            size = f"total_memory={budget}" if kind == "memory" else f"budget={budget}"
            label = (f"[{i + 1}/{len(jobs)}] {kind} {name} {size} stream={stream} seed={seed} "
                     f"order={cfg.class_order}")
            todo.append((label, job, path))
    if cfg.workers == 1:
        for label, job, path in todo:
            print(f"{label} ({time.perf_counter() - start:.0f} s)", flush=True)
            print(run_and_write(job, cfg, path), flush=True)
    else:
        # A fresh process per run (spawned: no state shared with this one), so a record
        # is the same whichever worker ran it and whatever ran before it there.
        context = multiprocessing.get_context("spawn")
        fresh: dict[str, Any] = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
        with ProcessPoolExecutor(cfg.workers, mp_context=context, **fresh) as pool:
            pending = {pool.submit(run_and_write, job, cfg, path): label
                       for label, job, path in todo}
            for future in as_completed(pending):
                print(f"{pending[future]} ({time.perf_counter() - start:.0f} s)", flush=True)
                print(future.result(), flush=True)
    print(f"done: {len(jobs)} runs in {out / 'runs'} ({time.perf_counter() - start:.0f} s)")


def cmd_report(cfg: argparse.Namespace) -> None:
    """Write the report of the records under ``--out`` (:func:`benchmarks.report.write_report`)."""
    try:
        written = write_report(Path(cfg.out))
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {', '.join(map(str, written))}")


def cmd_prepare(cfg: argparse.Namespace) -> None:
    """Unpack the data set's files under ``--root`` (Fashion-MNIST: ``FashionMNIST/raw/``)."""
    data = DATA_SETS[cfg.data_set]
    try:
        raw = data.prepare(cfg.root, cfg.source)
    except data.missing_error as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{'Fashion-MNIST' if data.name == 'fmnist' else data.name} ready in {raw}")


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=__doc__.splitlines()[0]
    )
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="unpack a data set's files (Fashion-MNIST's idx files)")
    prep.add_argument("--data-set", choices=sorted(DATA_SETS), default="fmnist")
    prep.add_argument("--root", default="data")
    prep.add_argument("--source", default=None,
                      help=f"where the packed files are (Fashion-MNIST: {DEBIAN_FASHION_MNIST})")
    prep.set_defaults(func=cmd_prepare)

    run = sub.add_parser("run", help="run the comparison (or the ablation) and write records")
    run.add_argument("--root", default="data", help="dataset root holding FashionMNIST/raw/")
    run.add_argument("--out", default="results/fmnist")
    run.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    run.add_argument("--data-set", choices=sorted(DATA_SETS),
                     help="the data set (benchmarks.data_sets; default: the preset's, fmnist)")
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
        if cfg.data_set is None:
            cfg.data_set = "fmnist"
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
    except tuple(d.missing_error for d in DATA_SETS.values()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
