"""Memory and time of cached against uncached teachers, ResNet-32 M2KD training steps.

With ``cache_teachers=True`` (the default) a :class:`~avalanche_m2kd.SnapshotStore`
keeps every teacher it built dense until the next snapshot: ``T`` snapshots hold ``T``
dense models for the whole experience. With ``cache_teachers=False`` it holds at most
one, and the plugins free it after every step, so every step rebuilds its teachers
(in ``nested`` mode from the live weights and the owner indices). This script
measures, for Avalanche's iCaRL ResNet-32 (``make_icarl_net(num_classes=100)``), a
mini-batch of 32x32 RGB images and ``T`` snapshots, in each storage mode asked:

* the bytes the store holds to serve teachers, exact
  (:meth:`~avalanche_m2kd.SnapshotStore.teacher_nbytes`: the dense teachers'
  parameters and buffers, plus the owner indices an uncached ``nested`` store keeps
  unpacked): at most during a step, and after it; and how many teachers stay held;
* the peak resident memory of the process (``ru_maxrss``) over the M2KD steps, and
  what it was before them (model, store, inputs);
* the median M2KD step (student step plus the losses of both distillation plugins,
  :func:`benchmarks.step_cost.make_steps`) and the time to build all ``T`` teachers.

Each setting runs in its own subprocess, since a process's peak RSS never goes
down; the settings run one after the other.

    python -m benchmarks.teacher_memory                    # T = 9, batch 128, nested and full
    python -m benchmarks.teacher_memory --teachers 3 --batch 32 --modes nested --reps 3

``--out DIR`` also writes the record, ``DIR/results.json`` (the settings, the date,
the thread count and one row per mode and setting, as :func:`measure` returns it),
from which :func:`markdown` prints the same table; the documentation renders the
committed ``benchmarks/results/teacher-memory/results.json`` with it (the page
*Cost: memory and time*):

    OMP_NUM_THREADS=1 python -m benchmarks.teacher_memory --out benchmarks/results/teacher-memory
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any

warnings.filterwarnings("ignore", message="no QP solver")

import torch  # noqa: E402

from avalanche_m2kd import FrozenTeacher  # noqa: E402
from benchmarks import records  # noqa: E402
from benchmarks.step_cost import make_steps  # noqa: E402

MIB = 2**20


def _peak_rss_bytes() -> int:
    """This process's peak resident set size (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(mode: str, cache: bool, n_teachers: int, batch: int, reps: int) -> dict[str, Any]:
    """One setting, in this process: bytes held, peak RSS, step and build times."""
    steps = make_steps(n_teachers, batch, reps, snapshot_mode=mode, cache_teachers=cache)  # type: ignore[arg-type]
    store = steps.store
    held_during = 0
    build = store.teacher

    def spying_teacher(k: int) -> FrozenTeacher:  # the bytes held right after each teacher is built
        nonlocal held_during
        teacher = build(k)
        held_during = max(held_during, store.teacher_nbytes())
        return teacher

    store.teacher = spying_teacher
    rss_before = _peak_rss_bytes()
    times = []
    for i in range(reps + 2):  # 2 warm-up steps
        start = time.perf_counter()
        steps.m2kd()
        if i >= 2:
            times.append(time.perf_counter() - start)
    rss_peak = _peak_rss_bytes()
    held_after = store.teacher_nbytes()
    teachers_after = len(store.held_teachers())
    store.teacher = build
    builds = []
    for _ in range(reps):
        store.release_teachers()
        start = time.perf_counter()
        for k in range(n_teachers):
            store.teacher(k)
        builds.append(time.perf_counter() - start)
    steps.close()
    return dict(
        mode=mode,
        cache=cache,
        teachers=n_teachers,
        batch=batch,
        held_during=held_during,
        held_after=held_after,
        teachers_after=teachers_after,
        rss_before=rss_before,
        rss_peak=rss_peak,
        step=statistics.median(times),
        build_all=statistics.median(builds),
    )


def _in_subprocess(mode: str, cache: bool, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "benchmarks.teacher_memory", "--child", mode, str(int(cache)),
        "--teachers", str(args.teachers), "--batch", str(args.batch), "--reps", str(args.reps),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks.teacher_memory``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.teacher_memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", type=int, default=9)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--modes", nargs="+", choices=["nested", "pruned", "full"], default=["nested", "full"]
    )
    parser.add_argument("--out", metavar="DIR", help="also write DIR/results.json")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, cache = args.child[0], bool(int(args.child[1]))
        print(json.dumps(measure(mode, cache, args.teachers, args.batch, args.reps)))
        return
    record: dict[str, Any] = dict(
        records.header("teacher_memory", argv),
        threads=torch.get_num_threads(),
        teachers=args.teachers,
        batch=args.batch,
        reps=args.reps,
        rows=[],
    )
    lines = markdown(record).splitlines()
    print("\n".join(lines), flush=True)  # the heading, then one row at a time
    for mode in args.modes:
        for cache in (True, False):
            record["rows"].append(_in_subprocess(mode, cache, args))
            print(_row(record["rows"][-1]), flush=True)
    if args.out is not None:
        records.write(record, args.out)


def _row(r: dict[str, Any]) -> str:
    return (
        f"| {r['mode']} | {r['cache']} | {r['held_during'] / MIB:.2f} "
        f"| {r['held_after'] / MIB:.2f} | {r['teachers_after']} | {r['rss_peak'] / MIB:.0f} "
        f"| {r['rss_before'] / MIB:.0f} | {r['step']:.3f} | {r['build_all']:.3f} |"
    )


def markdown(record: dict[str, Any]) -> str:
    """The table of a record (what ``--out`` writes): a line of settings, then one row
    per mode and setting."""
    lines = [
        f"ResNet-32 (make_icarl_net), {record['teachers']} teachers, batch {record['batch']}, "
        f"{record['threads']} thread{'s' * (record['threads'] != 1)}, median of "
        f"{record['reps']} steps, one subprocess per row",
        "",
        "| mode | cache_teachers | teacher bytes held during a step MiB | after a step MiB "
        "| teachers held after a step | peak RSS MiB | RSS before the steps MiB | M2KD step s "
        "| build all teachers s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(lines + [_row(r) for r in record["rows"]])


if __name__ == "__main__":
    main()
