"""A class-incremental M2KD run that survives being killed: checkpoint after each experience.

Split digits (scikit-learn's embedded 8x8 digits, no download), 5 experiences of 2
classes, M2KD with its defaults (``nested`` snapshots, 40 exemplars). After every
experience the run is saved to ``--checkpoint``; started again with the same
arguments, it resumes after the last saved experience, with the snapshot store,
exemplars, optimizer, RNG states and evaluation history of the interrupted run, and
ends with the metrics a run never interrupted would have (on the CPU, exactly).

    python examples/resumable.py --checkpoint run.ckpt          # kill it, run it again
    python examples/resumable.py --checkpoint run.ckpt --out metrics.json

The shape of the loop is all a user's script needs::

    strategy, start = maybe_load_checkpoint(strategy, path, benchmark.train_stream)
    for exp in benchmark.train_stream[start:]:
        strategy.train(exp); strategy.eval(benchmark.test_stream); save_checkpoint(strategy, path)
"""

from __future__ import annotations

import argparse
import json
import warnings

warnings.filterwarnings("ignore", message="no QP solver")  # printed by an Avalanche dependency

import torch  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from torch import nn  # noqa: E402

from avalanche_m2kd import M2KDStrategy  # noqa: E402
from avalanche_m2kd.checkpoint import maybe_load_checkpoint, save_checkpoint  # noqa: E402
from avalanche_m2kd.data import split_digits  # noqa: E402


def build(args: argparse.Namespace):
    """The benchmark and a fresh strategy, the same at every start."""
    torch.manual_seed(args.seed)
    benchmark = split_digits(5, seed=args.seed)
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        loggers=[],
    )
    strategy = M2KDStrategy(
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=32,
        train_epochs=args.epochs,
        eval_mb_size=256,
        evaluator=evaluator,
        mem_size=args.mem_size,
        snapshot_mode=args.snapshot_mode,
    )
    return benchmark, strategy


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (resumed if present)")
    parser.add_argument("--out", help="write the final metrics here as JSON")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mem-size", type=int, default=40)
    parser.add_argument("--snapshot-mode", default="nested", choices=["nested", "pruned", "full"])
    args = parser.parse_args(argv)

    benchmark, strategy = build(args)
    strategy, start = maybe_load_checkpoint(strategy, args.checkpoint, benchmark.train_stream)
    if start:
        print(f"resumed after experience {start - 1} from {args.checkpoint}", flush=True)
    for exp in benchmark.train_stream[start:]:
        strategy.train(exp)
        strategy.eval(benchmark.test_stream)
        save_checkpoint(strategy, args.checkpoint)
        print(f"experience {exp.current_experience} saved", flush=True)

    final = {
        name: float(values[-1])
        for name, (_, values) in strategy.evaluator.get_all_metrics().items()
        if isinstance(values[-1], (int, float))
    }
    final["snapshots"] = len(strategy.snapshots)
    print(f"final stream accuracy {final['Top1_Acc_Stream/eval_phase/test_stream/Task000']:.4f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(final, f, indent=1, sort_keys=True)
    return final


if __name__ == "__main__":
    main()
