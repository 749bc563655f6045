"""How close each nested snapshot is to the dense model it was pruned from.

For every experience ``k`` of a Split Fashion-MNIST run of ``M2KDStrategy`` (nested
store, 0.1's defaults otherwise, :data:`OPTIONS`), this records, on the test images of the classes
seen so far and of experience ``k``'s own classes:

* the dense model's accuracy just before pruning (eval mode, its running statistics);
* the recorded snapshot's accuracy (eval mode), which is the model evaluated between
  experiences, the one herding picks exemplars with and an eval-mode teacher;
* the snapshot's accuracy with batch statistics (train-mode BatchNorm, nothing
  updated), which shows how much of a drop is due to stale running statistics;

for each value of ``recalibrate_bn`` (the option that re-estimates the statistics of
the pruned model before recording), over seeds with permuted class orders
(``numpy.random.RandomState(seed).permutation(10)``). One JSON line per run goes to
``--out``; ``--report`` prints the summary table::

    python -m benchmarks.snapshot_fidelity --root data --out results/fidelity.jsonl --seeds 7 8 9
    python -m benchmarks.snapshot_fidelity --out results/fidelity.jsonl --report
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin  # noqa: E402
from torch import nn  # noqa: E402

from avalanche_m2kd import M2KDStrategy  # noqa: E402
from avalanche_m2kd.data.fmnist import split_fmnist  # noqa: E402
from benchmarks.backbones import make_backbone  # noqa: E402
from benchmarks.past_defaults import on_01  # noqa: E402

#: The options the committed records (``benchmarks/results/snapshot-fidelity``) ran
#: under: 0.1's defaults, which later releases changed (fair shares, sparse between
#: experiences, feature weight 1, batch-statistics teachers, the whole pass), so that
#: they reproduce whatever today's defaults are. ``recalibrate_bn`` is set per run.
OPTIONS: dict[str, Any] = on_01()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: list[int],
             batch_stats: bool = False) -> float:
    """Accuracy over the samples of ``classes``, predicting among ``classes`` only.

    ``batch_stats``: BatchNorm layers normalise with each batch's statistics (their
    running statistics are neither used nor changed); everything else in eval mode.
    """
    keep = torch.isin(y, torch.tensor(classes))
    x, y = x[keep], y[keep]
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # mixed batches
    x, y = x[order], y[order]
    model = copy.deepcopy(model).eval()
    if batch_stats:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
                m.track_running_stats = False
                m.running_mean = m.running_var = None
    cols = torch.tensor(sorted(classes))
    correct = 0
    for i in range(0, len(x), 256):
        logits = model(x[i:i + 256])[:, cols]
        correct += int((cols[logits.argmax(1)] == y[i:i + 256]).sum())
    return correct / max(len(x), 1)


class _Fidelity(SupervisedPlugin):
    """Captures the dense model before pruning and scores it against the snapshot."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.x, self.y = x, y
        self.rows: list[dict[str, Any]] = []
        self.dense: nn.Module | None = None

    def watch(self, strategy: M2KDStrategy) -> None:
        store, prune = strategy.snapshots, strategy.snapshots.prune

        def prune_and_keep_dense(model: nn.Module, experience: int, keep: float
                                 ) -> dict[str, torch.Tensor]:
            self.dense = copy.deepcopy(model)
            return prune(model, experience, keep)

        store.prune = prune_and_keep_dense  # type: ignore[method-assign]

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:  # after M2KD's recording
        dense = self.dense
        assert dense is not None, "M2KD pruned nothing before recording"
        own = sorted(int(c) for c in strategy.experience.classes_in_this_experience)
        seen = sorted(c for exp in strategy.snapshots.classes for c in exp)
        row: dict[str, Any] = {"experience": strategy.experience.current_experience}
        for name, classes in (("own", own), ("seen", seen)):
            row[f"dense_{name}"] = accuracy(dense, self.x, self.y, classes)
            row[f"snapshot_{name}"] = accuracy(strategy.model, self.x, self.y, classes)
            row[f"snapshot_batch_stats_{name}"] = accuracy(
                strategy.model, self.x, self.y, classes, True
            )
        self.rows.append(row)


def run(root: str, stream: str, seed: int, recalibrate_bn: bool, mem_size: int, epochs: int,
        train_per_class: int, test_per_class: int) -> dict[str, Any]:
    """One run; returns its record (per-experience rows and the options)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    order = [int(c) for c in np.random.RandomState(seed).permutation(10)]
    benchmark = split_fmnist(stream, dataset_root=root, class_order=order,
                             max_train_per_class=train_per_class, max_test_per_class=test_per_class)
    x = torch.cat([torch.stack([s[0] for s in exp.dataset]) for exp in benchmark.test_stream])
    y = torch.cat(
        [torch.tensor([int(t) for t in exp.dataset.targets]) for exp in benchmark.test_stream]
    )
    n_first = len(benchmark.train_stream[0].classes_in_this_experience)
    model = make_backbone("cnn", in_channels=1, n_classes=10, initial_classes=n_first)
    fidelity = _Fidelity(x, y)
    options = {**OPTIONS, "recalibrate_bn": recalibrate_bn}
    strategy = M2KDStrategy(
        model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4),
        train_mb_size=64, train_epochs=epochs, eval_mb_size=256, mem_size=mem_size,
        evaluator=EvaluationPlugin(loggers=[]), plugins=[fidelity], **options,
    )
    fidelity.watch(strategy)
    start = time.time()
    for exp in benchmark.train_stream:
        strategy.train(exp)
    seen = [r["snapshot_seen"] for r in fidelity.rows]
    return {"stream": stream, "seed": seed, "class_order": order, "recalibrate_bn": recalibrate_bn,
            "mem_size": mem_size, "epochs": epochs, "options": options, "rows": fidelity.rows,
            "average_incremental": sum(seen) / len(seen), "final": seen[-1],
            "seconds": round(time.time() - start, 1)}


def report(path: Path) -> str:
    """Markdown summary of the records in ``path`` (mean ± std over seeds)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["stream"], r["recalibrate_bn"]), []).append(r)

    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    lines = [
        "| stream | recalibrate_bn | seeds | step-0 snapshot (own) | largest drop vs dense (own) "
        "| mean drop vs dense (own) | avg. incr. acc. | final acc. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (stream, recal), rs in sorted(groups.items()):
        drops = [[r0["dense_own"] - r0["snapshot_own"] for r0 in r["rows"]] for r in rs]
        lines.append(
            f"| {stream} | {recal} | {', '.join(str(r['seed']) for r in rs)} "
            f"| {ms([r['rows'][0]['snapshot_own'] for r in rs])} | {ms([max(d) for d in drops])} "
            f"| {ms([sum(d) / len(d) for d in drops])} "
            f"| {ms([r['average_incremental'] for r in rs])} "
            f"| {ms([r['final'] for r in rs])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--streams", nargs="+", default=["5x2", "2+1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[7, 8, 9])
    parser.add_argument("--recalibrate", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--mem-size", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--report", action="store_true", help="print the summary of --out and exit")
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.out))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["stream"], r["seed"], r["recalibrate_bn"]))
    for stream in args.streams:
        for seed in args.seeds:
            for recal in (c == "on" for c in args.recalibrate):
                if (stream, seed, recal) in done:
                    continue
                record = run(args.root, stream, seed, recal, args.mem_size, args.epochs,
                             args.train_per_class, args.test_per_class)
                with args.out.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(stream, seed, recal, f"avg {record['average_incremental']:.3f}",
                      f"final {record['final']:.3f}", f"{record['seconds']} s", flush=True)
    print(report(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
