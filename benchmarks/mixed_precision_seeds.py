"""How a mixed-precision student's accuracy spreads over seeds, beside float32's.

The run of ``tests/test_strategy.py::test_mixed_precision_student``: the test suite's
small BatchNorm conv net on Split digits (5 experiences, seed 0), ``M2KDStrategy`` with
20 exemplars and features at layers ``1`` and ``4``, 4 epochs on the first two
experiences, then the accuracy on their test classes (chance is 1/4). One line per
seed: float32, bfloat16 and float16 students from the same start. It sizes that test's
bar::

    python -m benchmarks.mixed_precision_seeds --seeds 0 1 2 3 4 5 6 7 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from torch import nn  # noqa: E402

from avalanche_m2kd import M2KDStrategy  # noqa: E402
from avalanche_m2kd.data import split_digits  # noqa: E402

ACC = "Top1_Acc_Stream/eval_phase/test_stream/Task000"
DTYPES: dict[str, torch.dtype | None] = {
    "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16,
}


def conv_net() -> nn.Module:
    """The test suite's conv net for 1x8x8 digits (``tests/conftest.py``)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def accuracy(benchmark: Any, seed: int, dtype: torch.dtype | None) -> float:
    """The test's run on ``benchmark`` (the test's Split digits) from
    ``torch.manual_seed(seed)`` with ``mixed_precision=dtype``."""
    torch.manual_seed(seed)
    model = conv_net()
    strategy = M2KDStrategy(
        model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), train_mb_size=32,
        train_epochs=4, evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
        mem_size=20, feature_layers=["1", "4"], mixed_precision=dtype,
    )
    for exp in benchmark.train_stream[:2]:
        strategy.train(exp)
    return float(strategy.eval(benchmark.test_stream[:2])[ACC])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    benchmark = split_digits(5, seed=0, flatten=False)  # built once, as the test's fixture
    print("| seed | " + " | ".join(DTYPES) + " |")
    print("|---|" + "---|" * len(DTYPES))
    for seed in args.seeds:
        row = [f"{accuracy(benchmark, seed, dtype):.3f}" for dtype in DTYPES.values()]
        print(f"| {seed} | " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
