"""Quick check of M2KD variants on Split digits (5 x 2 classes), final accuracy.

Same MLP (64-128-128-10), SGD 0.05/0.9, 8 epochs, batch 32, a 40-exemplar
class-balanced memory with herding (where used) for every variant; mean of 3 seeds.
All variants run through ``M2KDStrategy`` (naive = no memory and no distillation,
replay = memory only), so nothing but the named option changes.

    python -m benchmarks.digits_variants [VARIANT ...]
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="no QP solver")

import torch  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from torch import nn  # noqa: E402

from avalanche_m2kd import M2KDStrategy  # noqa: E402
from avalanche_m2kd.data import split_digits  # noqa: E402

NO_DISTILL = dict(mm_weight=0.0, feat_weight=0.0)
PLAIN_CE = dict(logit_adjustment=0.0)
CUM = dict(teacher_slice="cumulative")
VARIANTS: dict[str, dict] = {
    "naive (no memory)": dict(mem_size=0, snapshot_mode="full", **NO_DISTILL, **PLAIN_CE),
    "replay only": dict(snapshot_mode="full", **NO_DISTILL, **PLAIN_CE),
    "LwF + buffer (last, cumulative)": dict(
        snapshot_mode="full", teachers="last", feat_weight=0.0, **CUM, **PLAIN_CE
    ),
    "all teachers, cumulative, full": dict(
        snapshot_mode="full", feat_weight=0.0, **CUM, **PLAIN_CE
    ),
    "all teachers, own, full": dict(snapshot_mode="full", feat_weight=0.0, **PLAIN_CE),
    "all teachers, own, full + features": dict(snapshot_mode="full", **PLAIN_CE),
    "nested, own + features": dict(**PLAIN_CE),
    "replay + LA": dict(snapshot_mode="full", **NO_DISTILL),
    "LwF + buffer + LA": dict(snapshot_mode="full", teachers="last", feat_weight=0.0, **CUM),
    "all teachers, own, full + features + LA": dict(snapshot_mode="full"),
    "nested, released weights restart at zero (defaults otherwise)": dict(
        warm_start_released=False
    ),
    "nested (defaults: own, features, LA)": dict(),
    "nested, no distillation, LA": dict(**NO_DISTILL),
}


def run(seed: int, warm_start_released: bool = True, **options) -> float:
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


def main(names: list[str]) -> None:
    print("| variant | final accuracy (mean ± std, 3 seeds) | seeds | time |")
    print("|---|---|---|---|")
    for name in names or VARIANTS:
        start = time.perf_counter()
        accs = [run(seed, **VARIANTS[name]) for seed in range(3)]
        print(
            f"| {name} | {statistics.mean(accs):.3f} ± {statistics.stdev(accs):.3f} | "
            f"{', '.join(f'{a:.3f}' for a in accs)} | {time.perf_counter() - start:.0f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
