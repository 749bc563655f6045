"""Quick check of M2KD variants on Split digits (5 x 2 classes), final accuracy.

Same MLP (64-128-128-10), SGD 0.05/0.9, 8 epochs, batch 32, a 40-exemplar
class-balanced memory with herding (where used) for every variant; mean of 3 seeds.
All variants run through ``M2KDStrategy`` (naive = no memory and no distillation,
replay = memory only), so nothing but the named option changes.

    python -m benchmarks.digits_variants [VARIANT ...] [--seeds 0 1 2] [--out DIR]

``--out DIR`` also writes the record, ``DIR/results.json`` (the seeds and, per
variant, its options and the final accuracy of every seed), from which
:func:`markdown` prints the same table; the documentation renders the committed
``benchmarks/results/digits-variants/results.json`` with it (the page *Split digits*):

    OMP_NUM_THREADS=1 python -m benchmarks.digits_variants --out benchmarks/results/digits-variants
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

warnings.filterwarnings("ignore", message="no QP solver")

import torch  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from torch import nn  # noqa: E402

from avalanche_m2kd import M2KDStrategy  # noqa: E402
from avalanche_m2kd.data import split_digits  # noqa: E402
from benchmarks import records  # noqa: E402
from benchmarks.past_defaults import on_01  # noqa: E402

NO_DISTILL = dict(mm_weight=0.0, feat_weight=0.0)
PLAIN_CE = dict(logit_adjustment=0.0)
CUM = dict(teacher_slice="cumulative")
VARIANTS: dict[str, dict] = {
    "naive (no memory)": on_01(mem_size=0, snapshot_mode="full", **NO_DISTILL, **PLAIN_CE),
    "replay only": on_01(snapshot_mode="full", **NO_DISTILL, **PLAIN_CE),
    "LwF + buffer (last, cumulative)": on_01(
        snapshot_mode="full", teachers="last", feat_weight=0.0, **CUM, **PLAIN_CE
    ),
    "all teachers, cumulative, full": on_01(
        snapshot_mode="full", feat_weight=0.0, **CUM, **PLAIN_CE
    ),
    "all teachers, own, full": on_01(snapshot_mode="full", feat_weight=0.0, **PLAIN_CE),
    "all teachers, own, full + features": on_01(snapshot_mode="full", **PLAIN_CE),
    "nested, own + features": on_01(**PLAIN_CE),
    "replay + LA": on_01(snapshot_mode="full", **NO_DISTILL),
    "LwF + buffer + LA": on_01(snapshot_mode="full", teachers="last", feat_weight=0.0, **CUM),
    "all teachers, own, full + features + LA": on_01(snapshot_mode="full"),
    "nested, released weights restart at zero (defaults otherwise)": on_01(
        warm_start_released=False
    ),
    "nested (defaults: own, features, LA)": on_01(),
    "nested, no distillation, LA": on_01(**NO_DISTILL),
    # today's defaults with three strengths of the logit adjustment (0.2 chose 0.75 on
    # Split Fashion-MNIST; the rows above ran with 0.1's 1)
    **{f"defaults, logit adjustment {tau}": dict(logit_adjustment=tau) for tau in (1.0, 0.75, 0.5)},
}


def run(seed: int, warm_start_released: bool = True, **options: Any) -> float:
    torch.manual_seed(seed)
    benchmark = split_digits(5, seed=seed)
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    options.setdefault("mem_size", 40)
    strategy = M2KDStrategy(
        model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), nn.CrossEntropyLoss(),
        train_mb_size=32, train_epochs=8, eval_mb_size=256,
        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]), **options,
    )
    strategy.masking.warm_start_released = warm_start_released
    for exp in benchmark.train_stream:
        strategy.train(exp)
    return strategy.eval(benchmark.test_stream)["Top1_Acc_Stream/eval_phase/test_stream/Task000"]


def _row(r: dict[str, Any]) -> str:
    accs = r["accuracy"]
    spread = f" ± {statistics.stdev(accs):.3f}" if len(accs) > 1 else ""
    return (f"| {r['variant']} | {statistics.mean(accs):.3f}{spread} | "
            f"{', '.join(f'{a:.3f}' for a in accs)} |")


def markdown(record: dict[str, Any]) -> str:
    """The table of a record (what ``--out`` writes): one row per variant."""
    n = len(record["seeds"])
    lines = [f"| variant | final accuracy (mean ± std, {n} seed{'s' * (n != 1)}) | seeds |",
             "|---|---|---|"]
    return "\n".join(lines + [_row(r) for r in record["rows"]])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``python -m benchmarks.digits_variants``: print the table (and
    write the record with ``--out``); return the record."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.digits_variants",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", metavar="VARIANT",
                        help="the variants to run (default: all), by name")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", metavar="DIR", help="also write DIR/results.json")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    record: dict[str, Any] = dict(
        records.header("digits_variants", argv),
        threads=torch.get_num_threads(),
        seeds=args.seeds,
        rows=[],
    )
    print(markdown(record), flush=True)
    for name in args.variants or VARIANTS:
        start = time.perf_counter()
        accs = [run(seed, **VARIANTS[name]) for seed in args.seeds]
        record["rows"].append(dict(variant=name, options=VARIANTS[name], accuracy=accs,
                                   seconds=round(time.perf_counter() - start, 1)))
        print(_row(record["rows"][-1]), flush=True)
    if args.out is not None:
        records.write(record, args.out)
    return record

if __name__ == "__main__":
    main()
