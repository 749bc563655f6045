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

``--teacher-dtype bfloat16``, ``--channels-last`` and ``--uncached-teachers`` compare
instead, in the same process, the M2KD step (and one teacher forward) of cached fp32
teachers in the default memory format against the variant (``--uncached-teachers``: a
``nested`` store with ``cache_teachers=False``, which rebuilds every teacher in
every step; its "teacher forward" includes that rebuild): each setting has its own model, store and
plugins built from the same seed, and their steps are timed in turn (one step of
each per repetition, so that the machine's load drifts over all of them alike).
``--teacher-batching vmap streams`` compares the teachers run together
(:mod:`avalanche_m2kd.batched_teachers`) against the loop the same way.

``--device cuda`` runs everything on the GPU (every timed step ends with
``torch.cuda.synchronize()``, so it counts the GPU's work, not only the launches);
``--student-dtype float16`` and ``--teacher-dtype float16`` are for CUDA.

    python -m benchmarks.step_cost                       # T = 1, 3, 9; batch 128
    python -m benchmarks.step_cost --teachers 1 9 --batch 64 --reps 5
    python -m benchmarks.step_cost --teachers 9 --teacher-sample 3   # sampled teachers
    python -m benchmarks.step_cost --teacher-dtype bfloat16         # bf16 autocast teachers
    python -m benchmarks.step_cost --channels-last teachers all     # memory format
    python -m benchmarks.step_cost --uncached-teachers              # rebuild cost per step
    python -m benchmarks.step_cost --device cuda --teacher-batching vmap streams \\
        --teacher-dtype bfloat16
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import warnings
from collections.abc import Callable
from types import SimpleNamespace

warnings.filterwarnings("ignore", message="no QP solver")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from avalanche.models import make_icarl_net  # noqa: E402

from avalanche_m2kd import MultiLevelDistillationPlugin, MultiModelDistillationPlugin, SnapshotStore  # noqa: E402
from avalanche_m2kd.snapshots import SnapshotMode  # noqa: E402

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


def _interleaved_medians(
    steps: dict[str, Callable[[], None]], reps: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of each step, timed in turn: one of each per repetition."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


#: Memory formats ``--channels-last`` can put in ``torch.channels_last``.
CHANNELS_LAST = ("teachers", "all")


def make_steps(
    n_teachers: int,
    batch: int,
    reps: int,
    teacher_sample: int | None = None,
    teacher_dtype: torch.dtype | None = None,
    channels_last: str | None = None,
    snapshot_mode: SnapshotMode = "full",
    cache_teachers: bool = True,
    student_dtype: torch.dtype | None = None,
    teachers_first: bool = True,
    teacher_batching: str = "loop",
    device: str = "cpu",
    teacher_bn: str = "batch",
) -> SimpleNamespace:
    """A seeded ResNet-32, its store of ``n_teachers`` snapshots and the step functions.

    Args:
        teacher_sample, teacher_dtype: the plugins' options.
        channels_last: ``None`` (default memory format), ``"teachers"`` (the
            teachers' weights in ``torch.channels_last``) or ``"all"`` (also the
            student and its input).
        snapshot_mode: the store's mode; ``"nested"`` prunes an equal share of the
            weights for each snapshot (nothing freezes the owned weights here: the
            teachers cost what they would, but drift from the snapshots).
        cache_teachers: the store's option; off, every M2KD step rebuilds its teachers.
        teachers_first: the plugins' order (teachers in ``before_forward``); False
            runs them after the student's forward, with its graph alive (the order
            before 2026-11-25).
        student_dtype: the student's forward under ``torch.autocast`` in this dtype,
            its output cast to float32, as ``M2KDStrategy(mixed_precision=...)`` does.
        teacher_batching: the plugins' option (``"loop"``, ``"vmap"``, ``"streams"``).
        device: where the model, teachers and mini-batches live; on CUDA every step
            ends with ``torch.cuda.synchronize()``.
        teacher_bn: the plugins' option; ``"batch"`` (default here, 0.2's default, the
            one these records ran with), so every step runs its teachers. With
            ``"running"`` the store's output cache serves the repeated mini-batches
            and a step measures cache hits.

    Returns:
        ``student``, ``teacher`` (one forward), ``m2kd`` and ``floor`` steps, the
        ``store``, and ``close()`` to remove the student's hooks.
    """
    torch.manual_seed(0)
    model = make_icarl_net(num_classes=100).to(device)
    model.train()
    if channels_last == "all":
        model = model.to(memory_format=torch.channels_last)
    store = SnapshotStore(snapshot_mode, head_name=HEAD, cache_teachers=cache_teachers)
    store.bind(model)
    for k in range(n_teachers):
        if snapshot_mode == "nested":
            store.prune(model, k, keep=1 / (n_teachers + 1 - k))
        store.record(
            model, list(range(k * CLASSES_PER_EXPERIENCE, (k + 1) * CLASSES_PER_EXPERIENCE))
        )
    if channels_last is not None:  # teachers are cached: converted once, as a plugin option would
        for k in range(n_teachers):
            store.teacher(k).module.to(memory_format=torch.channels_last)
    seen = (n_teachers + 1) * CLASSES_PER_EXPERIENCE
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inputs = [torch.randn(batch, 3, 32, 32, device=device) for _ in range(reps + 2)]
    if channels_last == "all":
        inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
    targets = torch.randint(0, seen, (batch,), device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    counter = itertools.count()

    def fresh() -> torch.Tensor:  # a new tensor each step: the teachers' memo never skips a forward
        return inputs[next(counter) % len(inputs)].clone()

    def student_step() -> None:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(fresh())[:, :seen], targets)
        loss.backward()
        optimizer.step()
        sync()

    turn = itertools.count()

    def teacher_forward() -> None:  # round-robin: each teacher's weights as cold as in a step
        store.teacher(next(turn) % n_teachers).run(fresh(), "batch", teacher_dtype)
        sync()

    strategy = SimpleNamespace(
        model=model, experience=None, mb_x=None, mb_output=None, loss=None, device=device
    )
    logit_plugin = MultiModelDistillationPlugin(
        store=store,
        teacher_sample=teacher_sample,
        teacher_dtype=teacher_dtype,
        teacher_batching=teacher_batching,
        teacher_bn=teacher_bn,
    )
    feature_plugin = MultiLevelDistillationPlugin(
        store=store,
        head_name=HEAD,
        teacher_dtype=teacher_dtype,
        teacher_batching=teacher_batching,
        teacher_bn=teacher_bn,
    )
    logit_plugin.before_training_exp(strategy)
    feature_plugin.before_training_exp(strategy)

    def student_forward(x: torch.Tensor) -> torch.Tensor:
        if student_dtype is None:
            return model(x)
        with torch.autocast(torch.device(device).type, dtype=student_dtype):
            return model(x).float()

    def m2kd_step() -> None:
        optimizer.zero_grad()
        strategy.mb_x = fresh()
        if teachers_first:
            logit_plugin.before_forward(strategy)  # the hooks in Avalanche's order
            feature_plugin.before_forward(strategy)
        strategy.mb_output = student_forward(strategy.mb_x)[:, :seen]
        if not teachers_first:
            logit_plugin.before_forward(strategy)
            feature_plugin.before_forward(strategy)
        strategy.loss = F.cross_entropy(strategy.mb_output, targets)
        logit_plugin.before_backward(strategy)
        feature_plugin.before_backward(strategy)
        strategy.loss.backward()
        optimizer.step()
        logit_plugin.after_training_iteration(strategy)  # frees the teachers if not cached
        sync()

    def floor_step() -> None:  # the same forwards and backward, no distillation loss
        optimizer.zero_grad()
        x = fresh()
        for k in range(n_teachers):  # before the student's forward, as the plugins do
            store.teacher(k).run(x, "batch", teacher_dtype)
            x = x.clone()  # defeat the memo: every teacher runs
        loss = F.cross_entropy(student_forward(x)[:, :seen], targets)
        loss.backward()
        optimizer.step()
        sync()

    def close() -> None:
        feature_plugin.after_training_exp(strategy)  # removes the student's feature hooks

    return SimpleNamespace(
        student=student_step,
        teacher=teacher_forward,
        m2kd=m2kd_step,
        floor=floor_step,
        store=store,
        close=close,
    )


def measure(n_teachers: int, batch: int, reps: int, teacher_sample: int | None = None,
            device: str = "cpu") -> dict[str, float]:
    """Seconds per student step, teacher forward and M2KD step with ``n_teachers``."""
    steps = make_steps(n_teachers, batch, reps, teacher_sample, device=device)
    student = _median_time(steps.student, reps)
    teacher = _median_time(steps.teacher, reps)
    m2kd = _median_time(steps.m2kd, reps)
    floor = _median_time(steps.floor, reps)
    steps.close()
    return dict(student=student, teacher=teacher, m2kd=m2kd, floor=floor,
                ratio=m2kd / (student + n_teachers * teacher), ratio_floor=m2kd / floor)


def compare(n_teachers: int, batch: int, reps: int, variants: dict[str, dict],
            device: str = "cpu") -> dict[str, dict[str, float]]:
    """M2KD step and teacher forward of fp32 default-format teachers and of each variant.

    Args:
        variants: name -> keyword arguments of :func:`make_steps` for the setting
            (``teacher_dtype``, ``channels_last``, ``teacher_batching``, ...); the
            baseline (fp32 teachers and student, the loop) is added under ``"default"``.
        device: where every setting runs.

    Returns:
        name -> ``{"m2kd": s, "teacher": s, "m2kd_ratio": ..., "teacher_ratio": ...}``,
        the ratios against the baseline (below 1: the variant is faster).
    """
    settings = {"default": make_steps(n_teachers, batch, reps, device=device)}
    settings.update(
        {
            name: make_steps(n_teachers, batch, reps, device=device, **kw)
            for name, kw in variants.items()
        }
    )
    m2kd = _interleaved_medians({name: s.m2kd for name, s in settings.items()}, reps)
    teacher = _interleaved_medians({name: s.teacher for name, s in settings.items()}, reps)
    for s in settings.values():
        s.close()
    return {
        name: dict(
            m2kd=m2kd[name],
            teacher=teacher[name],
            m2kd_ratio=m2kd[name] / m2kd["default"],
            teacher_ratio=teacher[name] / teacher["default"],
        )
        for name in settings
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks.step_cost``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--teachers", type=int, nargs="+", default=[1, 3, 9])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument(
        "--teacher-sample",
        type=int,
        default=None,
        help="M2KD step distils from this many sampled teachers (the floors keep all T)",
    )
    parser.add_argument(
        "--teacher-dtype",
        choices=["bfloat16", "float16"],
        default=None,
        help="compare autocast teachers in this dtype against fp32 ones, in one process",
    )
    parser.add_argument(
        "--channels-last",
        choices=CHANNELS_LAST,
        nargs="+",
        default=None,
        help="compare channels_last teachers (or student and teachers) against the default",
    )
    parser.add_argument(
        "--student-dtype",
        choices=["bfloat16", "float16"],
        default=None,
        help="compare an autocast student (mixed_precision) alone and with teachers in that dtype",
    )
    parser.add_argument(
        "--teacher-batching",
        choices=["vmap", "streams"],
        nargs="+",
        default=None,
        help="compare teachers run together (M2KDStrategy(teacher_batching=...)) against the loop",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (float16 settings need cuda)")
    parser.add_argument(
        "--teachers-after",
        action="store_true",
        help="compare running the teachers after the student's forward (the old order)",
    )
    parser.add_argument("--uncached-teachers", action="store_true",
                        help="compare a nested store that rebuilds its teachers every step")
    args = parser.parse_args(argv)
    if (args.teacher_dtype or args.channels_last or args.uncached_teachers or args.student_dtype
            or args.teachers_after or args.teacher_batching):
        _print_comparison(args)
        return
    sampled = f", teacher_sample={args.teacher_sample}" if args.teacher_sample else ""
    print(f"ResNet-32 (make_icarl_net), batch {args.batch}, {_where(args.device)}, "
          f"median of {args.reps} steps{sampled}\n")
    print(
        "| teachers T | student step s | teacher forward s "
        "| student + T teacher forwards in one step s "
        "| M2KD step s | M2KD / (student + T x teacher) | M2KD / one-step floor |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.teachers:
        r = measure(n, args.batch, args.reps, args.teacher_sample, args.device)
        print(
            f"| {n} | {r['student']:.3f} | {r['teacher']:.3f} | {r['floor']:.3f} "
            f"| {r['m2kd']:.3f} | {r['ratio']:.2f} | {r['ratio_floor']:.2f} |",
            flush=True,
        )


def _where(device: str) -> str:
    """``"2 threads"`` on the CPU, the GPU's name on CUDA."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"{torch.get_num_threads()} threads"


def _print_comparison(args: argparse.Namespace) -> None:
    variants: dict[str, dict] = {}
    dtype = getattr(torch, args.teacher_dtype) if args.teacher_dtype else None
    if dtype is not None:
        variants[args.teacher_dtype] = dict(teacher_dtype=dtype)
    for where in args.channels_last or []:
        variants[f"channels_last {where}"] = dict(channels_last=where)
        if dtype is not None:
            variants[f"{args.teacher_dtype} + channels_last {where}"] = dict(
                teacher_dtype=dtype, channels_last=where
            )
    if args.student_dtype:
        student = getattr(torch, args.student_dtype)
        variants[f"{args.student_dtype} student"] = dict(student_dtype=student)
        variants[f"{args.student_dtype} student + teachers"] = dict(
            student_dtype=student, teacher_dtype=student
        )
    if args.teachers_after:
        variants["teachers after the student's forward"] = dict(teachers_first=False)
    if args.uncached_teachers:
        variants["nested, cache_teachers=False"] = dict(
            snapshot_mode="nested", cache_teachers=False
        )
    for batching in args.teacher_batching or []:
        variants[f"teacher_batching={batching}"] = dict(teacher_batching=batching)
        if dtype is not None:
            variants[f"{args.teacher_dtype} + teacher_batching={batching}"] = dict(
                teacher_dtype=dtype, teacher_batching=batching
            )
    print(f"ResNet-32 (make_icarl_net), batch {args.batch}, {_where(args.device)}, "
          f"median of {args.reps} steps, settings timed in turn in one process\n")
    print("| teachers T | setting | M2KD step s | / default | one teacher forward s | / default |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in args.teachers:
        for name, r in compare(n, args.batch, args.reps, variants, args.device).items():
            print(
                f"| {n} | {name} | {r['m2kd']:.3f} | {r['m2kd_ratio']:.2f} | {r['teacher']:.3f} | "
                f"{r['teacher_ratio']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
