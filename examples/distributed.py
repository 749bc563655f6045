"""M2KD on several processes or GPUs with ``torchrun``: nothing beyond Avalanche's init.

Split digits (no download) as 8x8 images, a small conv net with BatchNorm and an
``IncrementalClassifier`` head that grows at every experience, M2KD with its defaults
(``nested`` snapshots, class-balanced exemplars). Run as one process, or under
``torchrun``; ``DistributedHelper.init_distributed`` is the only distributed line:
``M2KDStrategy`` wraps the model in DDP itself, again after every head growth.

    python examples/distributed.py                                        # one process
    torchrun --standalone --nproc_per_node=2 examples/distributed.py      # 2 CPU processes (gloo)
    torchrun --standalone --nproc_per_node=4 examples/distributed.py --cuda   # 4 GPUs (NCCL)
    torchrun --standalone --nproc_per_node=2 examples/distributed.py --checkpoint run.ckpt

``--train-mb-size`` is the global mini-batch: each of the N processes takes 1/N of it,
so the runs see the same number of samples per step. With ``--out DIR`` each rank writes
``DIR/rank<r>.pt``: its device, final weights, snapshot store and exemplar buffer, its
accuracy on the whole test set (counted directly, on every rank), and the accuracies
its evaluator reported after ``strategy.eval`` (on rank 0, also those its logger got).
"""

from __future__ import annotations

import argparse
import os
import warnings

warnings.filterwarnings("ignore", message="no QP solver")  # printed by an Avalanche dependency
warnings.filterwarnings("ignore", message="No loggers specified")

import torch  # noqa: E402
from avalanche.distributed import DistributedHelper  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics  # noqa: E402
from avalanche.logging import BaseLogger  # noqa: E402
from avalanche.models import IncrementalClassifier  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from torch import nn  # noqa: E402

from avalanche_m2kd import M2KDStrategy  # noqa: E402
from avalanche_m2kd.checkpoint import maybe_load_checkpoint, save_checkpoint  # noqa: E402
from avalanche_m2kd.data import split_digits  # noqa: E402


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten(),
        IncrementalClassifier(32 * 4 * 4, initial_out_features=2),
    )


class RecordingLogger(BaseLogger):
    """Keeps every value it is asked to log (the logger's view of the metrics)."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: dict[str, float] = {}

    def log_single_metric(self, name, value, x_plot) -> None:
        if isinstance(value, (int, float)):
            self.logged[name] = float(value)


@torch.no_grad()
def whole_test_accuracy(model: nn.Module, benchmark, device: torch.device) -> float:
    """Accuracy on every test sample, on this rank alone (no sharding)."""
    model.eval()
    correct = total = 0
    for exp in benchmark.test_stream:
        for x, y, *_ in torch.utils.data.DataLoader(exp.dataset.eval(), batch_size=512):
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            total += len(y)
    return correct / total


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-mb-size", type=int, default=32, help="global mini-batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cuda", action="store_true", help="one GPU per process, NCCL")
    parser.add_argument("--out", help="folder for rank<r>.pt (weights, store, buffer, accuracy)")
    parser.add_argument(
        "--checkpoint", help="checkpoint file: resumed if present, saved after each experience"
    )
    args = parser.parse_args(argv)

    DistributedHelper.init_distributed(random_seed=args.seed, use_cuda=args.cuda)
    world, rank = DistributedHelper.world_size, DistributedHelper.rank
    if args.train_mb_size % world:
        parser.error(f"--train-mb-size {args.train_mb_size} is not a multiple of {world} processes")
    device = DistributedHelper.make_device()

    benchmark = split_digits(5, seed=args.seed, flatten=False)
    model = make_model()
    # Avalanche: loggers on rank 0 only.
    loggers = [RecordingLogger()] if DistributedHelper.is_main_process else []
    strategy = M2KDStrategy(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=args.train_mb_size // world,
        train_epochs=args.epochs,
        eval_mb_size=256,
        device=device,
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=loggers),
        mem_size=40,
        feature_layers=["1", "5"],
    )
    start = 0
    if args.checkpoint:
        strategy, start = maybe_load_checkpoint(strategy, args.checkpoint, benchmark.train_stream)
    for exp in benchmark.train_stream[start:]:
        strategy.train(exp)
        if args.checkpoint:
            save_checkpoint(strategy, args.checkpoint)  # rank 0 writes, the others wait
        if DistributedHelper.is_main_process:
            print(f"experience {exp.current_experience} done ({world} process(es))", flush=True)

    accuracy = whole_test_accuracy(strategy.model, benchmark, device)
    # The evaluator's metrics, as Avalanche reports them.
    reported = strategy.eval(benchmark.test_stream)
    if DistributedHelper.is_main_process:
        print(f"final accuracy on all test classes: {accuracy:.4f}", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        replay = next(p for p in strategy.plugins if hasattr(p, "storage_policy"))
        torch.save(
            {
                "model": {k: v.cpu() for k, v in strategy.model.state_dict().items()},
                "store": strategy.snapshots.state_dict(),
                "buffer": replay.storage_policy.state_dict(),
                "accuracy": accuracy,
                "reported": {
                    k: float(v) for k, v in reported.items() if isinstance(v, (int, float))
                },
                "logged": loggers[0].logged if loggers else None,
                "world_size": world,
                "device": str(device),
            },
            os.path.join(args.out, f"rank{rank}.pt"),
        )
    if world > 1:
        torch.distributed.destroy_process_group()
    return accuracy


if __name__ == "__main__":
    main()
