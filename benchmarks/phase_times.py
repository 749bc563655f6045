"""Where a run's time goes: one run of each method of the harness, timed by phase, in one process.

Each method runs the comparison harness's run (:func:`benchmarks.runs.run_one`: the
same stream, seed, class order, backbone, epochs and memory as ``compare run``), one
after the other in this process, so that their figures are comparable with each other
(the machine is shared: absolute seconds are not, ratios are). Every second of a run's
wall time lands in exactly one phase; a phase nested in another (a mini-batch fetched
while herding) counts only in the inner one:

* ``data``: building the benchmark and every ``DataLoader`` step (fetching, transforms,
  collation), in training, evaluation and M2KD's own passes alike;
* ``student``: the training epochs less everything nested in them (forward, loss,
  backward and update of the live model, the plugins' per-step work, a peer's previous
  model forwards: LwF's, iCaRL's, BiC's, DER's replayed logits);
* ``teachers``: M2KD's snapshot forwards (``SnapshotStore.run_teacher(s)``);
* ``exemplars``: updating an exemplar memory (herding and selection included);
* ``batchnorm``: M2KD's BatchNorm re-estimation after pruning;
* ``keep search``: M2KD's search for the smallest faithful keep (its pruned copies,
  their re-estimation and evaluations);
* ``bias correction``: BiC's second stage;
* ``evaluation``: the test stream's evaluations after each experience, less data;
* ``other``: the rest (strategy and model set-up, model adaptation, snapshots taken,
  iCaRL's class means, ...).

It prints, per method, the wall time, each phase's seconds and share of it, and each
method's wall time over Replay's (``--baseline``), and its CPU time (the process's,
``time.process_time``) over Replay's: a run is one thread, so on a machine shared with
other jobs the CPU time moves less with their load than the wall time. It writes the
record with ``--out``:

    python -m benchmarks.phase_times --root data --methods replay m2kd er-ace der bic \\
        --stream 5x2 --exemplars 200 --preset memory --out results/phase-times

The options after the script's own (``--methods``, ``--stream``, ``--seed``,
``--exemplars``, ``--total-memory``, ``--baseline``, ``--out``) are ``compare run``'s
(``--preset``, ``--train-per-class``, ``--epochs``, ...); its ``--variants`` times M2KD's
ablation variants too, after the methods, each as a row ``m2kd: <variant>``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import storage_policy

from avalanche_m2kd.exemplars import ClassBalancedBuffer
from avalanche_m2kd.plugins import nested_training
from avalanche_m2kd.snapshots import SnapshotStore
from benchmarks import compare, records, runs
from benchmarks.ablation import ABLATION
from benchmarks.data_sets import DATA_SETS

#: The phases, in the order they are printed (see the module docstring).
PHASES = ("data", "student", "teachers", "exemplars", "batchnorm", "keep search",
          "bias correction", "evaluation", "other")


class PhaseClock:
    """Exclusive seconds per phase: time spent in a phase nested inside another counts
    only in the nested one.

    Args:
        clock: the time source (seconds); ``time.perf_counter`` by default.

    Example:
        >>> ticks = iter([0.0, 1.0, 3.0, 10.0])  # enter student, enter data, exit, exit
        >>> clock = PhaseClock(clock=lambda: next(ticks))
        >>> with clock.phase("student"):
        ...     with clock.phase("data"):
        ...         pass
        >>> clock.seconds["student"], clock.seconds["data"]
        (8.0, 2.0)
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:  # noqa: D107
        self.clock = clock
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._open: list[list[Any]] = []  # [phase, start, seconds of nested phases]

    def enter(self, phase: str) -> None:
        """Start ``phase`` (one of :data:`PHASES`); it ends with :meth:`exit`."""
        if phase not in self.seconds:
            raise ValueError(f"Expected a phase in {PHASES}, but got {phase!r}")
        self._open.append([phase, self.clock(), 0.0])

    def exit(self, phase: str) -> None:
        """End ``phase``, the innermost open one."""
        if not self._open or self._open[-1][0] != phase:
            open_ = [entry[0] for entry in self._open]
            raise RuntimeError(f"Cannot end phase {phase!r}: the open phases are {open_}")
        _, start, nested = self._open.pop()
        elapsed = self.clock() - start
        self.seconds[phase] += elapsed - nested
        if self._open:
            self._open[-1][2] += elapsed

    @contextlib.contextmanager
    def phase(self, phase: str) -> Iterator[None]:
        """``with clock.phase(name):`` times its body as ``name``."""
        self.enter(phase)
        try:
            yield
        finally:
            self.exit(phase)

    def timed(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, each call timed as ``phase``."""

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.phase(phase):
                return fn(*args, **kwargs)

        return call


class _TimedIterator:
    """A ``DataLoader`` iterator whose every ``next`` is timed as ``data``."""

    def __init__(self, iterator: Iterator[Any], clock: PhaseClock) -> None:
        self.iterator, self.clock = iterator, clock

    def __iter__(self) -> _TimedIterator:
        return self

    def __next__(self) -> Any:
        with self.clock.phase("data"):
            return next(self.iterator)

    def __len__(self) -> int:
        return len(self.iterator)  # type: ignore[arg-type]


class PhasePlugin(SupervisedPlugin):
    """Times the training epochs as ``student`` and the evaluations as ``evaluation``
    (what runs nested in them, in its own phase); added after a method's own plugins,
    so that their epoch-end work (M2KD's pruning) falls inside the epoch."""

    def __init__(self, clock: PhaseClock) -> None:  # noqa: D107
        super().__init__()
        self.clock = clock

    def before_training_epoch(self, strategy: Any, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self.clock.enter("student")

    def after_training_epoch(self, strategy: Any, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self.clock.exit("student")

    def before_eval(self, strategy: Any, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self.clock.enter("evaluation")

    def after_eval(self, strategy: Any, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self.clock.exit("evaluation")

    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        for plugin in strategy.plugins:  # BiC's second stage, on the plugin object only
            step = getattr(plugin, "bias_correction_step", None)
            if step is not None and not hasattr(step, "__wrapped__"):
                plugin.bias_correction_step = self.clock.timed("bias correction", step)


def _memory_updates() -> list[tuple[type, str]]:
    """``(class, name)`` of every exemplar memory's update, Avalanche's and ours:
    each class's own ``post_adapt``, or ``update`` (Avalanche 0.6.0's deprecated
    name, which DER's memory overrides and BiC calls)."""
    found, todo = [], [storage_policy.ExemplarsBuffer]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        found += [(cls, name) for name in ("post_adapt", "update") if name in vars(cls)]
    assert (ClassBalancedBuffer, "post_adapt") in found
    return found


def patch_targets() -> list[tuple[Any, str, str]]:
    """``(owner, attribute, phase)`` of every function :func:`instrumented` times:
    public names of torch, Avalanche and this package (``tests/benchmarks`` pins that
    each exists)."""
    targets: list[tuple[Any, str, str]] = [
        (torch.utils.data.DataLoader, "__iter__", "data"),
        *((type(data), "benchmark", "data") for data in DATA_SETS.values()),
        (SnapshotStore, "run_teacher", "teachers"),
        (SnapshotStore, "run_teachers", "teachers"),
        (nested_training, "recalibrate_batch_norm", "batchnorm"),
        (nested_training, "smallest_faithful_keep", "keep search"),
    ]
    targets += [(cls, name, "exemplars") for cls, name in _memory_updates()]
    return targets


@contextlib.contextmanager
def instrumented(clock: PhaseClock) -> Iterator[None]:
    """While inside, the functions of :func:`patch_targets` are timed on ``clock``
    (a ``DataLoader``'s iterator step by step); all restored on exit."""
    saved = []
    try:
        for owner, name, phase in patch_targets():
            original = vars(owner)[name]
            saved.append((owner, name, original))
            if name == "__iter__":
                def iterate(loader: Any, _original: Any = original) -> _TimedIterator:
                    return _TimedIterator(_original(loader), clock)

                setattr(owner, name, iterate)
            else:
                setattr(owner, name, clock.timed(phase, original))
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def time_run(method: str, cfg: argparse.Namespace, stream: str, seed: int,
             exemplars: int, total_memory: int | None,
             variant: str | None = None) -> dict[str, Any]:
    """One harness run of ``method`` (or of M2KD's ablation ``variant``), timed by phase:
    its seconds per phase, its wall time, and its accuracies (the run's record, less
    its matrix). A variant's row is named ``m2kd: <variant>``."""
    clock = PhaseClock()
    options = None if variant is None else ABLATION[variant]
    with instrumented(clock):
        start, cpu_start = time.perf_counter(), time.process_time()
        record = runs.run_one(method, exemplars, stream, seed, cfg, options=options,
                              variant=variant, total_memory=total_memory,
                              plugins=(PhasePlugin(clock),))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if clock._open:  # a hook that did not fire: the figures would be wrong
        raise RuntimeError(f"phases left open after the run: {clock._open}")
    seconds = dict(clock.seconds)
    seconds["other"] = wall - sum(v for k, v in seconds.items() if k != "other")
    return dict(
        method=method if variant is None else f"{method}: {variant}",
        wall_s=wall,
        cpu_s=cpu,
        seconds=seconds,
        budget=record.get("budget"),
        final_accuracy=record.get("final_accuracy"),
        average_incremental_accuracy=record.get("average_incremental_accuracy"),
    )


def markdown(record: dict[str, Any]) -> str:
    """The table of a record: a row per method, its wall time, its time over the
    baseline's, its CPU time over the baseline's (records before it: ``-``), and each
    phase's share of its wall time."""
    runs = record["runs"]
    baseline: dict[str, Any] = next((r for r in runs if r["method"] == record["baseline"]), {})
    base, base_cpu = baseline.get("wall_s"), baseline.get("cpu_s")
    memory = (f"{record['total_memory']:,} bytes of total memory" if record["total_memory"]
              else f"{record['exemplars']} exemplars")
    head = ["method", "wall s", f"/ {record['baseline']}", "CPU s", "CPU /", *PHASES]
    lines = [
        f"Split Fashion-MNIST {record['stream']}, {record['train_images_per_class']} training "
        f"and {record['test_images_per_class']} test images per class, {record['epochs']} "
        f"epochs, {memory}, seed {record['seed']}, {record['backbone']}, "
        f"{record['threads']} thread(s); each phase's share of the wall time:",
        "",
    ]
    rows = []
    for r in runs:
        ratio = f"{r['wall_s'] / base:.2f}" if base else "-"
        cpu = r.get("cpu_s")
        cpu_ratio = f"{cpu / base_cpu:.2f}" if cpu and base_cpu else "-"
        shares = [f"{100 * r['seconds'][p] / r['wall_s']:.1f}%" for p in PHASES]
        rows.append([r["method"], f"{r['wall_s']:.1f}", ratio,
                     f"{cpu:.1f}" if cpu else "-", cpu_ratio, *shares])
    return "\n".join(lines + records.table(head, rows))


def build_parser() -> argparse.ArgumentParser:
    """This script's own options; the rest goes to ``compare run``'s parser."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.phase_times",
                                description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", choices=compare.METHODS,
                   default=["replay", "m2kd", "er-ace", "der", "bic"])
    p.add_argument("--stream", default="5x2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exemplars", type=int, default=200,
                   help="exemplars of every method (ignored with --total-memory)")
    p.add_argument("--total-memory", type=int, metavar="BYTES",
                   help="equal total memory instead of equal exemplars")
    p.add_argument("--baseline", default="replay", help="the method the wall times are divided by")
    p.add_argument("--out", help="write DIR/results.json")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``python -m benchmarks.phase_times``; returns the record."""
    args, rest = build_parser().parse_known_args(argv)
    warnings.simplefilter("ignore")  # Avalanche's deprecation notices: progress is on stdout
    cfg = compare.parse(["run", *rest])
    record = records.header("phase_times", argv)
    record.update(stream=args.stream, seed=args.seed, exemplars=args.exemplars,
                  total_memory=args.total_memory, baseline=args.baseline,
                  train_images_per_class=cfg.train_per_class,
                  test_images_per_class=cfg.test_per_class, epochs=cfg.epochs,
                  backbone=cfg.backbone, batch_size=cfg.batch_size,
                  threads=torch.get_num_threads(), torch=torch.__version__, runs=[])
    jobs = [(method, None) for method in args.methods]
    jobs += [("m2kd", variant) for variant in cfg.variants or ()]
    for method, variant in jobs:
        print(f"{method if variant is None else variant} ...", flush=True)
        record["runs"].append(time_run(method, cfg, args.stream, args.seed, args.exemplars,
                                       args.total_memory, variant))
    print(markdown(record))
    if args.out:
        records.write(json.loads(json.dumps(record)), args.out)
    return record


if __name__ == "__main__":
    main()
