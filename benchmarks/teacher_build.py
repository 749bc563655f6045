"""Teachers built through public PyTorch against the old private writes: bit-exactness, build
and step time, in one process.

Commit 3baabd6 changed how a teacher is built: :meth:`FrozenTeacher.rebuild
<avalanche_m2kd.snapshots.FrozenTeacher.rebuild>` replaces a copy's parameters and
buffers with ``setattr`` (it wrote ``_parameters`` / ``_buffers`` before), and the
copied hooks are cleared by :func:`avalanche_m2kd._torch.clear_hooks` (every hook
dictionary, in the frozen teachers and in the weightless template of the ``vmap``
stacks, :class:`~avalanche_m2kd.batched_teachers.StackedTeachers`). This script
re-implements the code before that commit (:func:`old_rebuild`,
:func:`old_batched_build`) and, for each setting, builds the teachers of one M2KD state
both ways, then:

* checks that they are the same teachers: every ``state_dict`` tensor equal, and the
  logits and captured features (the distilled head input, and the three stage outputs)
  ``torch.equal`` for every teacher, with the BatchNorm statistics of the batch and the
  stored ones; under ``vmap``, the stacks' logits and features too; and after the
  timed steps, the two students (same seed, same inputs) bit-identical;
* times building all ``T`` teachers (from the decoded snapshot tensors: the decoding,
  the same for both, is left out; under ``vmap`` also building their stack), and an
  M2KD training step that uses them (the student's forward and backward, the ``T``
  teacher forwards and both distillation plugins' losses, called through their hooks as
  Avalanche calls them, :func:`benchmarks.step_cost.make_steps`'s step), the two
  variants in turn in every round (ABBA order), and reports each round's ratio new/old:
  its median, min and max, and the mean with a Student-t 95% interval
  (:func:`benchmarks.stats.mean_interval`). The garbage collector is off inside each
  timing (it runs between them), so that neither variant pays for the other's garbage.

The state: the harness's backbone (:func:`benchmarks.backbones.make_backbone`: the CPU
CNN on 1x28x28 inputs, or ResNet-32, Avalanche's ``make_icarl_net``, on 3x32x32), a
``nested`` :class:`~avalanche_m2kd.SnapshotStore` of ``T`` snapshots (each pruned with
an equal share of the free weights, the free weights and BatchNorm statistics moved
between snapshots as training would), two classes per experience, the student in
experience ``T`` with the distillation plugins' defaults. With ``teacher_batching``
``loop`` the head is the harness's ``IncrementalClassifier`` that grows by two units
per experience (so every teacher's head has another shape: the rebuild replaces
tensors of other shapes); with ``vmap`` it is grown to its final size from the start
(the harness's ``--head final``), so that the teachers have one shape and stack.

    python -m benchmarks.teacher_build                      # cnn and resnet32, loop and vmap
    python -m benchmarks.teacher_build --backbones cnn --batching loop --repeats 5

``--out DIR`` also writes the record, ``DIR/results.json`` (the settings, the date, the
thread count and one row per setting), from which :func:`markdown` prints the same
table; the documentation renders the committed
``benchmarks/results/teacher-build/results.json`` (the page *Run time*):

    OMP_NUM_THREADS=1 python -m benchmarks.teacher_build --out benchmarks/results/teacher-build
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import itertools
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any
from unittest import mock

warnings.filterwarnings("ignore", message="no QP solver")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from avalanche.models import IncrementalClassifier  # noqa: E402
from torch import Tensor, nn  # noqa: E402

import avalanche_m2kd.batched_teachers as batched_teachers  # noqa: E402
from avalanche_m2kd import MultiLevelDistillationPlugin, MultiModelDistillationPlugin, SnapshotStore  # noqa: E402
from avalanche_m2kd.batched_teachers import StackedTeachers  # noqa: E402
from avalanche_m2kd.frozen_teacher import (  # noqa: E402
    FrozenTeacher,
    TeacherBatchNorm,
    _match_memory_format,
)
from benchmarks import records  # noqa: E402
from benchmarks.backbones import FEATURE_STAGES, make_backbone  # noqa: E402
from benchmarks.stats import mean_interval  # noqa: E402

#: The commit that moved the teachers to public PyTorch; the old code is its parent's.
COMMIT = "3baabd6"
HEAD = "classifier"
CLASSES_PER_EXPERIENCE = 2
#: Input shape of each backbone (the harness's Fashion-MNIST for the CNN, CIFAR for ResNet-32).
IMAGE = {"cnn": (1, 28, 28), "resnet32": (3, 32, 32)}
#: The teachers' BatchNorm modes whose outputs are compared.
BATCH_NORMS: tuple[TeacherBatchNorm, ...] = ("batch", "running")
BUILDS_PER_ROUND = 3  # builds of all T teachers timed together, per variant and round
WARMUP = 2


# ------------------------------------------------------------- the code before 3baabd6
# Faithful copies of `git show 3baabd6^:avalanche_m2kd/frozen_teacher.py` (_set_tensor,
# _shell) and `git show 3baabd6^:avalanche_m2kd/batched_teachers.py` (_clear_hooks).
# FrozenTeacher.rebuild's other steps (_match_memory_format, FrozenTeacher.__init__) and
# StackedTeachers are unchanged by that commit and are used as they are.
def _old_set_tensor(module: nn.Module, name: str, value: Tensor) -> None:
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if attr in owner._parameters:
        old_param = owner._parameters[attr]
        value = value.to(old_param.device) if old_param is not None else value
        owner._parameters[attr] = nn.Parameter(value, requires_grad=False)
    elif attr in owner._buffers:
        old_buffer = owner._buffers[attr]
        owner._buffers[attr] = value.to(old_buffer.device) if old_buffer is not None else value
    else:
        raise KeyError(f"{name!r} is neither a parameter nor a buffer of the model")


def _old_shell(model: nn.Module, replaced: Iterable[str]) -> nn.Module:
    params = dict(model.named_parameters())
    memo: dict[int, Any] = {
        id(params[n]): nn.Parameter(params[n].new_empty(0), requires_grad=False)
        for n in replaced
        if n in params
    }
    module = copy.deepcopy(model, memo)
    for m in module.modules():  # the student's hooks must not fire in a teacher
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
        m._backward_hooks.clear()
    for p in module.parameters():
        p.grad = None
    return module


def old_rebuild(
    model: nn.Module, tensors: Mapping[str, Tensor], feature_specs: Sequence[str] = ()
) -> FrozenTeacher:
    """``FrozenTeacher.rebuild`` as it was before commit 3baabd6 (private writes)."""
    module = _old_shell(model, tensors)
    for name, tensor in tensors.items():
        _old_set_tensor(module, name, tensor)
    _match_memory_format(module, model)
    return FrozenTeacher(module, feature_specs)


def _old_clear_hooks(module: nn.Module) -> None:
    for m in module.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks,
                      m._forward_hooks_with_kwargs, m._forward_hooks_always_called,
                      m._forward_pre_hooks_with_kwargs):
            hooks.clear()


@contextlib.contextmanager
def old_batched_build() -> Iterator[None]:
    """Within it, :class:`StackedTeachers` clears its template's hooks as before 3baabd6
    (the commit's only change to ``batched_teachers``)."""
    with mock.patch.object(batched_teachers, "clear_hooks", _old_clear_hooks):
        yield


def new_rebuild(
    model: nn.Module, tensors: Mapping[str, Tensor], feature_specs: Sequence[str] = ()
) -> FrozenTeacher:
    """Today's ``FrozenTeacher.rebuild`` (public PyTorch)."""
    return FrozenTeacher.rebuild(model, tensors, feature_specs)


REBUILDS: dict[str, Callable[..., FrozenTeacher]] = {"new": new_rebuild, "old": old_rebuild}
BATCHED_BUILDS: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "new": contextlib.nullcontext, "old": old_batched_build,
}


# ------------------------------------------------------------------------ the state
def _train_between_snapshots(model: nn.Module, store: SnapshotStore, shape: tuple) -> None:
    """Move what training would move: the free weights, every other parameter, the
    BatchNorm statistics (a forward in training mode); the owned weights stay."""
    free = store.free_masks()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = 0.05 * torch.randn_like(p)
            p.add_(noise * free[name] if name in free else noise)
        model(torch.randn(16, *shape))


def make_state(backbone: str, n_teachers: int, batch: int, batching: str,
               steps: int, seed: int = 0) -> SimpleNamespace:
    """One M2KD state (see the module docstring): the student in experience
    ``n_teachers``, its store of ``n_teachers`` snapshots, the plugins and an SGD
    optimiser, ``steps`` mini-batches, and the decoded tensors of every snapshot (what
    the store passes to ``FrozenTeacher.rebuild``)."""
    torch.manual_seed(seed)
    shape = IMAGE[backbone]
    seen = (n_teachers + 1) * CLASSES_PER_EXPERIENCE
    initial = CLASSES_PER_EXPERIENCE if batching == "loop" else seen
    model = make_backbone(backbone, in_channels=shape[0], initial_classes=initial)
    model.train()
    store = SnapshotStore("nested", head_name=HEAD)
    store.bind(model)
    for k in range(n_teachers + 1):
        classes = list(range(k * CLASSES_PER_EXPERIENCE, (k + 1) * CLASSES_PER_EXPERIENCE))
        head = model.classifier
        assert isinstance(head, IncrementalClassifier)  # make_backbone's default head
        head.adaptation(SimpleNamespace(classes_in_this_experience=classes))
        _train_between_snapshots(model, store, shape)
        if k < n_teachers:
            store.prune(model, k, keep=1 / (n_teachers + 1 - k))
            store.record(model, classes)
    strategy = SimpleNamespace(model=model, experience=None, mb_x=None, mb_output=None,
                               loss=None, device="cpu")
    plugins = [MultiModelDistillationPlugin(store=store, teacher_batching=batching),
               MultiLevelDistillationPlugin(store=store, head_name=HEAD,
                                            teacher_batching=batching)]
    for plugin in plugins:  # the student's feature hooks are on: the copies must drop them
        plugin.before_training_exp(strategy)
    decoded: list[dict[str, Tensor]] = []
    original = FrozenTeacher.rebuild

    def spy(cls: type[FrozenTeacher], model: nn.Module, tensors: Mapping[str, Tensor],
            feature_specs: Sequence[str] = ()) -> FrozenTeacher:  # what the store rebuilds from
        decoded.append(dict(tensors))
        return original(model, tensors, feature_specs)

    with mock.patch.object(FrozenTeacher, "rebuild", classmethod(spy)):
        for k in range(n_teachers):
            store.teacher(k)
    store.release_teachers()
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = [torch.randn(batch, *shape, generator=generator) for _ in range(steps)]
    targets = torch.randint(0, seen, (batch,), generator=generator)
    return SimpleNamespace(
        model=model, store=store, strategy=strategy, plugins=plugins, decoded=decoded,
        specs=plugins[1].layer_specs(model), inputs=inputs, targets=targets, seen=seen,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        counter=itertools.count(),
    )


def build_teachers(state: SimpleNamespace, variant: str,
                   specs: Sequence[str] | None = None) -> list[FrozenTeacher]:
    """The state's ``T`` teachers, built the ``variant`` way from its decoded tensors."""
    specs = state.specs if specs is None else specs
    return [REBUILDS[variant](state.model, t, specs) for t in state.decoded]


def use_teachers(state: SimpleNamespace, teachers: list[FrozenTeacher]) -> None:
    """Make the state's store serve ``teachers`` (as a cached store serves its own)."""
    state.store.teacher = teachers.__getitem__


def m2kd_step(state: SimpleNamespace) -> Tensor:
    """One M2KD training step (the plugins' hooks in Avalanche's order); its loss."""
    s, model = state.strategy, state.model
    state.optimizer.zero_grad()
    s.mb_x = state.inputs[next(state.counter) % len(state.inputs)].clone()
    for plugin in state.plugins:
        plugin.before_forward(s)
    s.mb_output = model(s.mb_x)[:, : state.seen]
    s.loss = F.cross_entropy(s.mb_output, state.targets)
    for plugin in state.plugins:
        plugin.before_backward(s)
    s.loss.backward()
    state.optimizer.step()
    for plugin in state.plugins:
        plugin.after_training_iteration(s)
    return s.loss.detach()


# ------------------------------------------------------------------- the measurements
def _outputs_equal(a: tuple[Tensor, dict[str, Tensor]], b: tuple[Tensor, dict[str, Tensor]]
                   ) -> tuple[bool, int]:
    """Whether two ``(logits, features)`` are bit-identical, and how many tensors."""
    same = torch.equal(a[0], b[0]) and a[1].keys() == b[1].keys()
    same = same and all(torch.equal(a[1][s], b[1][s]) for s in a[1])
    return same, 1 + len(a[1])


def check_bit_exact(state: SimpleNamespace, batching: str) -> dict[str, Any]:
    """Both builds' teachers (and, under ``vmap``, their stacks) on one mini-batch."""
    specs = [*state.specs, *FEATURE_STAGES]
    built = {v: build_teachers(state, v, specs) for v in REBUILDS}
    x = state.inputs[0]
    same, compared = True, 0
    for new, old in zip(built["new"], built["old"], strict=True):
        a, b = new.module.state_dict(), old.module.state_dict()
        same = same and a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
        same = same and not any(p.requires_grad for p in (*new.parameters(), *old.parameters()))
        compared += len(a)
        for bn in BATCH_NORMS:
            ok, n = _outputs_equal(new.run(x, bn), old.run(x, bn))
            same, compared = same and ok, compared + n
    if batching == "vmap":
        stacks = {}
        for v, context in BATCHED_BUILDS.items():
            with context():
                stacks[v] = StackedTeachers(built[v], specs)
        for bn in BATCH_NORMS:
            for out_new, out_old in zip(stacks["new"].run(x, bn), stacks["old"].run(x, bn),
                                        strict=True):
                ok, n = _outputs_equal(out_new, out_old)
                same, compared = same and ok, compared + n
    return dict(bit_exact=same, tensors_compared=compared)


def _ratios(times: dict[str, list[float]]) -> dict[str, Any]:
    """Medians of each variant's seconds, and each round's new/old: median, min, max,
    mean and the half-width of its 95% interval."""
    ratios = [n / o for n, o in zip(times["new"], times["old"], strict=True)]
    interval = mean_interval(ratios)
    return dict(new_s=statistics.median(times["new"]), old_s=statistics.median(times["old"]),
                ratio_median=statistics.median(ratios), ratio_min=min(ratios),
                ratio_max=max(ratios), ratio_mean=interval.mean,
                ratio_half_width=interval.half_width, rounds=len(ratios))


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No garbage collection inside a timing: the collector runs between them, so that
    neither variant pays for collecting the other's garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _orders(rounds: int) -> Iterator[tuple[str, str]]:
    """ABBA: new first in even rounds, old first in odd ones."""
    for r in range(rounds):
        yield ("new", "old") if r % 2 == 0 else ("old", "new")


def time_builds(state: SimpleNamespace, batching: str, rounds: int) -> dict[str, Any]:
    """Seconds to build all ``T`` teachers (and their stack, under ``vmap``), per variant."""
    def build(variant: str) -> float:
        with _no_gc():
            start = time.perf_counter()
            for _ in range(BUILDS_PER_ROUND):
                teachers = build_teachers(state, variant)
                if batching == "vmap":
                    with BATCHED_BUILDS[variant]():
                        StackedTeachers(teachers, state.specs)
            return (time.perf_counter() - start) / BUILDS_PER_ROUND

    for variant in REBUILDS:
        build(variant)
    times: dict[str, list[float]] = {"new": [], "old": []}
    for order in _orders(rounds):
        for variant in order:
            times[variant].append(build(variant))
    return _ratios(times)


def time_steps(states: dict[str, SimpleNamespace], batching: str, rounds: int
               ) -> dict[str, Any]:
    """Seconds per M2KD step of each variant's state (its own teachers), in turn; and
    whether the two students end bit-identical."""
    for variant, state in states.items():
        use_teachers(state, build_teachers(state, variant))
        with BATCHED_BUILDS[variant]():  # the first vmap step builds the store's stack
            for _ in range(WARMUP):
                m2kd_step(state)
    times: dict[str, list[float]] = {"new": [], "old": []}
    losses: dict[str, list[Tensor]] = {"new": [], "old": []}
    for order in _orders(rounds):
        for variant in order:
            with _no_gc():
                start = time.perf_counter()
                losses[variant].append(m2kd_step(states[variant]))
                times[variant].append(time.perf_counter() - start)
    a, b = (dict(states[v].model.state_dict()) for v in ("new", "old"))
    students_equal = all(torch.equal(a[n], b[n]) for n in a) and all(
        torch.equal(x, y) for x, y in zip(losses["new"], losses["old"], strict=True))
    for state in states.values():
        for plugin in state.plugins:
            plugin.after_training_exp(state.strategy)  # the student's feature hooks
    return dict(_ratios(times), students_equal=students_equal)


def measure(backbone: str, batching: str, n_teachers: int, batch: int, rounds: int
            ) -> dict[str, Any]:
    """One setting: the bit-exactness checks, build and step times (one row)."""
    states = {v: make_state(backbone, n_teachers, batch, batching, rounds + WARMUP)
              for v in REBUILDS}
    row: dict[str, Any] = dict(backbone=backbone, batching=batching,
                               head="grows" if batching == "loop" else "final size",
                               teachers=n_teachers, batch=batch)
    row.update(check_bit_exact(states["new"], batching))
    row["build"] = time_builds(states["new"], batching, rounds)
    row["step"] = time_steps(states, batching, rounds)
    return row


# ------------------------------------------------------------------------- reporting
def _cells(t: dict[str, Any]) -> list[str]:
    half = t["ratio_half_width"]
    interval = "–" if half is None else f"{t['ratio_mean']:.3f} ± {half:.3f}"
    return [f"{1000 * t['new_s']:.2f}", f"{1000 * t['old_s']:.2f}",
            f"{t['ratio_median']:.3f} [{t['ratio_min']:.3f}, {t['ratio_max']:.3f}]", interval]


def _row(r: dict[str, Any]) -> list[str]:
    exact = "yes" if r["bit_exact"] and r["step"]["students_equal"] else "**no**"
    return [r["backbone"], r["batching"], r["head"], str(r["batch"]),
            f"{exact} ({r['tensors_compared']} tensors)", *_cells(r["build"]),
            *_cells(r["step"])]


HEADINGS = ["backbone", "teacher_batching", "head", "batch", "bit-exact",
            "build new ms", "build old ms", "build new/old median [min, max]",
            "build new/old mean ± 95%", "step new ms", "step old ms",
            "step new/old median [min, max]", "step new/old mean ± 95%"]


def markdown(record: dict[str, Any]) -> str:
    """The table of a record (what ``--out`` writes): a line of settings, one row per
    setting, and the record's note if any."""
    threads = record["threads"]
    lines = [
        f"Teachers built through public PyTorch (new) against the private writes before "
        f"commit {record['commit']} (old): {record['teachers']} teachers of a nested store, "
        f"{record['rounds']} rounds (ABBA order) of {BUILDS_PER_ROUND} builds of all "
        f"teachers and one M2KD step per variant, {threads} thread{'s' * (threads != 1)}, "
        f"torch {record['torch']}. Bit-exact: every state_dict tensor, and the logits and "
        "features of every teacher (and stack) equal, and the two students bit-identical "
        "after the timed steps.",
        "",
        *records.table(HEADINGS, [_row(r) for r in record["rows"]]),
    ]
    if record.get("note"):
        lines += ["", record["note"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``python -m benchmarks.teacher_build``; returns the record."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.teacher_build",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", choices=sorted(IMAGE),
                        default=["cnn", "resnet32"])
    parser.add_argument("--batching", nargs="+", choices=["loop", "vmap"],
                        default=["loop", "vmap"])
    parser.add_argument("--teachers", type=int, default=4, help="snapshots T (default 4: 5x2)")
    parser.add_argument("--batch", type=int, default=64, help="the CNN's mini-batch")
    parser.add_argument("--resnet-batch", type=int, default=16, help="ResNet-32's mini-batch")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per setting")
    parser.add_argument("--note", default="", help="a sentence the record keeps under its table")
    parser.add_argument("--out", metavar="DIR", help="also write DIR/results.json")
    args = parser.parse_args(argv)
    record: dict[str, Any] = dict(
        records.header("teacher_build", argv), commit=COMMIT, threads=torch.get_num_threads(),
        torch=torch.__version__, teachers=args.teachers, rounds=args.repeats, note=args.note,
        rows=[],
    )
    for backbone in args.backbones:
        batch = args.batch if backbone == "cnn" else args.resnet_batch
        for batching in args.batching:
            record["rows"].append(measure(backbone, batching, args.teachers, batch,
                                          args.repeats))
            print("| " + " | ".join(_row(record["rows"][-1])) + " |", flush=True)
    print()
    print(markdown(record))
    if args.out is not None:
        records.write(record, args.out)
    return record


if __name__ == "__main__":
    main()
