"""Compute cost of an M2KD training step on ResNet-32 against its floor, in one process.

For ``T`` teachers, M2KD's step is a student step plus ``T`` teacher forwards; nothing
else should cost anything. This script measures, on Avalanche's iCaRL ResNet-32
(``make_icarl_net(num_classes=100)``) with a mini-batch of 32x32 RGB images:

* the plain student step: forward, cross-entropy, backward, SGD step;
* one teacher forward: ``store.teacher(k).run(x, "batch")``, as the plugins call it,
  cycling ``k`` over the ``T`` teachers;
* the M2KD step: the student step plus the losses of
  :class:`~avalanche_m2kd.MultiModelDistillationPlugin` (all teachers, ``own`` slice)
  and :class:`~avalanche_m2kd.MultiLevelDistillationPlugin` (head input, last teacher),
  called through their ``before_backward`` hooks exactly as Avalanche calls them;

* the one-step floor: one step doing the student's work and the ``T`` teacher
  forwards without any distillation loss (the same memory traffic as an M2KD step);

and reports ``M2KD step / (student step + T x teacher forward)`` (the issue's measure)
and ``M2KD step / one-step floor`` (what the plugins add): 1.0 means no overhead
beyond the teacher forwards. The teachers come from a ``full`` store (a
teacher's forward costs the same in every storage mode once rebuilt; rebuilding
happens once per experience, not per step). Each figure is the median of
``--reps`` timed repetitions after warm-up, with a fresh input tensor per step.

    python -m benchmarks.step_cost                       # T = 1, 3, 9; batch 128
    python -m benchmarks.step_cost --teachers 1 9 --batch 64 --reps 5
    python -m benchmarks.step_cost --teachers 9 --teacher-sample 3   # sampled teachers
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import warnings
from types import SimpleNamespace
from typing import Callable

warnings.filterwarnings("ignore", message="no QP solver")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from avalanche.models import make_icarl_net  # noqa: E402

from avalanche_m2kd import MultiLevelDistillationPlugin, MultiModelDistillationPlugin, SnapshotStore  # noqa: E402

CLASSES_PER_EXPERIENCE = 10
HEAD = "classifier"


def _median_time(step: Callable[[], None], reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(n_teachers: int, batch: int, reps: int, teacher_sample: int | None = None) -> dict[str, float]:
    """Seconds per student step, teacher forward and M2KD step with ``n_teachers``."""
    torch.manual_seed(0)
    model = make_icarl_net(num_classes=100)
    model.train()
    store = SnapshotStore("full", head_name=HEAD)
    store.bind(model)
    for k in range(n_teachers):
        store.record(model, list(range(k * CLASSES_PER_EXPERIENCE, (k + 1) * CLASSES_PER_EXPERIENCE)))
    seen = (n_teachers + 1) * CLASSES_PER_EXPERIENCE
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inputs = [torch.randn(batch, 3, 32, 32) for _ in range(reps + 2)]
    targets = torch.randint(0, seen, (batch,))
    counter = itertools.count()

    def fresh() -> torch.Tensor:  # a new tensor each step: the teachers' memo never skips a forward
        return inputs[next(counter) % len(inputs)].clone()

    def student_step() -> None:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(fresh())[:, :seen], targets)
        loss.backward()
        optimizer.step()

    turn = itertools.count()

    def teacher_forward() -> None:  # round-robin: each teacher's weights as cold as in a step
        store.teacher(next(turn) % n_teachers).run(fresh(), "batch")

    strategy = SimpleNamespace(model=model, experience=None, mb_x=None, mb_output=None, loss=None)
    logit_plugin = MultiModelDistillationPlugin(store=store, teacher_sample=teacher_sample)
    feature_plugin = MultiLevelDistillationPlugin(store=store, head_name=HEAD)
    logit_plugin.before_training_exp(strategy)
    feature_plugin.before_training_exp(strategy)

    def m2kd_step() -> None:
        optimizer.zero_grad()
        strategy.mb_x = fresh()
        strategy.mb_output = model(strategy.mb_x)[:, :seen]
        strategy.loss = F.cross_entropy(strategy.mb_output, targets)
        logit_plugin.before_backward(strategy)
        feature_plugin.before_backward(strategy)
        strategy.loss.backward()
        optimizer.step()

    def floor_step() -> None:  # the same forwards and backward, no distillation loss
        optimizer.zero_grad()
        x = fresh()
        loss = F.cross_entropy(model(x)[:, :seen], targets)
        for k in range(n_teachers):
            store.teacher(k).run(x, "batch")
            x = x.clone()  # defeat the memo: every teacher runs
        loss.backward()
        optimizer.step()

    student = _median_time(student_step, reps)
    teacher = _median_time(teacher_forward, reps)
    m2kd = _median_time(m2kd_step, reps)
    floor = _median_time(floor_step, reps)
    feature_plugin.after_training_exp(strategy)  # removes the student's feature hooks
    return dict(student=student, teacher=teacher, m2kd=m2kd, floor=floor,
                ratio=m2kd / (student + n_teachers * teacher), ratio_floor=m2kd / floor)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks.step_cost``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", type=int, nargs="+", default=[1, 3, 9])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--teacher-sample", type=int, default=None,
                        help="M2KD step distils from this many sampled teachers (the floors keep all T)")
    args = parser.parse_args(argv)
    sampled = f", teacher_sample={args.teacher_sample}" if args.teacher_sample else ""
    print(f"ResNet-32 (make_icarl_net), batch {args.batch}, {torch.get_num_threads()} threads, "
          f"median of {args.reps} steps{sampled}\n")
    print("| teachers T | student step s | teacher forward s | student + T teacher forwards in one step s "
          "| M2KD step s | M2KD / (student + T x teacher) | M2KD / one-step floor |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.teachers:
        r = measure(n, args.batch, args.reps, args.teacher_sample)
        print(f"| {n} | {r['student']:.3f} | {r['teacher']:.3f} | {r['floor']:.3f} | {r['m2kd']:.3f} | "
              f"{r['ratio']:.2f} | {r['ratio_floor']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
