"""Several teachers of one architecture run together: ``torch.func.vmap`` or CUDA streams.

A distillation step runs ``T`` teachers on the same mini-batch. The plain loop (the
default, ``teacher_batching="loop"``) launches ``T`` forwards one after the other;
on a GPU, small teachers (ResNet-32 on 32x32 images) leave most of the device idle
between kernel launches. Two ways to run them together:

* ``"vmap"``: the teachers' parameters and buffers are stacked
  (``torch.func.stack_module_state``) and one forward of a weightless copy of the
  network runs over the stack (``torch.func.functional_call`` under
  ``torch.func.vmap``): one launch per layer for all ``T`` teachers (convolutions
  become grouped convolutions). Only teachers whose parameters and buffers have the
  same names, shapes, dtypes and device are stacked together (snapshots of a fixed
  head; an ``IncrementalClassifier`` that grew between two snapshots puts them in
  different groups); a teacher alone in its group runs as in the loop.
* ``"streams"``: the loop, each teacher on its own CUDA stream, so that the GPU may
  overlap their kernels. On a CPU there are no streams: it runs the loop.

Both return what :meth:`~avalanche_m2kd.snapshots.FrozenTeacher.run` returns for each
teacher: its logits and the features captured at the store's layer specs. Under
``vmap`` the features are captured by forward hooks on the weightless copy (they fire
under ``functional_call``); the hook sees the batched tensor, which the vmapped
function returns, so features come back per teacher like the logits. ``batch_norm``
is honoured the same way as by the loop: ``"batch"`` puts the copy's BatchNorm
layers in training mode without running statistics (the batch's own statistics, the
stored ones neither used nor changed), ``"running"`` leaves them in eval mode.

``dtype`` (``teacher_dtype``): the loop and ``"streams"`` run each forward under
``torch.autocast``. Under ``vmap`` autocast does not reach every operation (on our
CPU, torch 2.14, the convolutions under ``vmap`` stayed float32 and the linear
layers became bfloat16), so ``"vmap"`` casts the stacked floating parameters and
buffers and the input to ``dtype`` itself (a low-precision copy of the stack, made
once) and runs every layer in that dtype, BatchNorm statistics included, where
autocast would keep some operations in float32. Outputs come back as float32 in
every mode. Batched results equal the loop's to float rounding, not bit for bit
(the grouped kernels sum in another order).

Costs: ``"vmap"`` holds a stacked copy of the teachers' weights (per dtype) beside
the teachers themselves, and the activations of all ``T`` teachers at once. It needs
the teachers materialised, so with ``cache_teachers=False`` (at most one dense
teacher) the store runs the loop.

Example:
    >>> from torch import nn
    >>> from avalanche_m2kd.snapshots import SnapshotStore
    >>> store = SnapshotStore("full")
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> store.bind(net)
    >>> for k in range(3):
    ...     store.record(net, classes=[2 * k, 2 * k + 1])
    >>> x = torch.randn(5, 4)
    >>> loop = [store.teacher(k).run(x)[0] for k in range(3)]
    >>> teachers = [store.teacher(k) for k in range(3)]
    >>> batched = TeacherStacks().run(teachers, x, "running", None, "vmap")
    >>> all(torch.allclose(a, b, atol=1e-6) for a, (b, _) in zip(loop, batched))
    True
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from avalanche_m2kd._torch import clear_hooks
from avalanche_m2kd.features import FeatureCapture
from avalanche_m2kd.options import check_choice

if TYPE_CHECKING:
    from avalanche_m2kd.frozen_teacher import FrozenTeacher, TeacherBatchNorm

__all__ = [
    "StackedTeachers",
    "TeacherBatching",
    "TeacherStacks",
    "check_teacher_batching",
    "run_on_streams",
]

TeacherBatching = Literal["loop", "vmap", "streams"]

Outputs = tuple[Tensor, dict[str, Tensor]]


def check_teacher_batching(value: str, cache_teachers: bool | None = None) -> str:
    """The checked ``teacher_batching`` option.

    Raises:
        ValueError: not one of :data:`TeacherBatching`, or ``"vmap"`` / ``"streams"``
            with ``cache_teachers=False`` (batched teachers must all be held at once,
            which that option exists to avoid).

    Example:
        >>> check_teacher_batching("vmap")
        'vmap'
        >>> check_teacher_batching("vmap", cache_teachers=False)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `teacher_batching` to be 'loop' with cache_teachers=False (it holds at most one dense teacher; batched teachers are all held at once), but got 'vmap'
    """  # noqa: E501 (the doctest's exception message is one line)
    check_choice(value, TeacherBatching, "teacher_batching")
    if value != "loop" and cache_teachers is False:
        raise ValueError(
            "Expected argument `teacher_batching` to be 'loop' with cache_teachers=False "
            "(it holds at most one dense teacher; batched teachers are all held at once), "
            f"but got {value!r}"
        )
    return value


def _signature(module: nn.Module) -> tuple:
    """What must agree for two modules to be stacked: class, tensor names, shapes,
    dtypes and devices."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return (type(module),) + tuple((n, tuple(t.shape), t.dtype, t.device) for n, t in tensors)


def _float32(t: Tensor) -> Tensor:
    return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t


class StackedTeachers:
    """Teachers of one architecture as one vmapped forward.

    Args:
        teachers: at least one :class:`~avalanche_m2kd.snapshots.FrozenTeacher`,
            all with the same parameter and buffer names, shapes, dtypes, devices.
        feature_specs: layer specs whose tensors :meth:`run` returns.
        dtype: ``None`` keeps the teachers' precision; ``torch.bfloat16`` or
            ``torch.float16`` stacks a copy in that dtype (see the module docstring).

    Raises:
        ValueError: no teacher, or teachers of different shapes.
    """

    def __init__(
        self,
        teachers: Sequence[FrozenTeacher],
        feature_specs: Sequence[str] = (),
        dtype: torch.dtype | None = None,
    ) -> None:
        if not teachers:
            raise ValueError("Expected at least one teacher to stack, got none")
        modules = [t.module for t in teachers]
        if len({_signature(m) for m in modules}) != 1:
            raise ValueError(
                "Expected teachers of one architecture (same parameter and buffer shapes) "
                "to stack; group them first"
            )
        params, buffers = stack_module_state(modules)
        # See the module docstring: autocast does not reach every op under vmap.
        if dtype is not None:
            params = {n: p.to(dtype) for n, p in params.items()}
            buffers = {n: b.to(dtype) if b.is_floating_point() else b for n, b in buffers.items()}
        self.params, self.buffers, self.dtype = params, buffers, dtype
        self.size = len(modules)
        self._teachers = [weakref.ref(t) for t in teachers]
        template = copy.deepcopy(modules[0])
        clear_hooks(template)  # the teacher's own capture hooks must not fire here
        self.template = template.to("meta")  # shapes only: the stack supplies every tensor
        self.specs = list(feature_specs)
        self._capture = FeatureCapture(self.template, self.specs).attach() if self.specs else None
        self._batch_norms = [
            m for m in self.template.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]

    def stacks(self, teachers: Sequence[FrozenTeacher]) -> bool:
        """Whether this stack was made from exactly these teacher objects (alive)."""
        return len(teachers) == self.size and all(
            r() is t for r, t in zip(self._teachers, teachers, strict=True)
        )

    def nbytes(self) -> int:
        """Bytes of the stacked parameters and buffers."""
        tensors = [*self.params.values(), *self.buffers.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _forward(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = functional_call(self.template, (params, buffers), (x,))
        features: dict[str, Tensor] = {}
        if self._capture is not None:  # the hooks saw the batched tensors: return them
            features = dict(self._capture.features)
            self._capture.features.clear()
        return logits, features

    @torch.no_grad()
    def run(
        self,
        x: Tensor,
        batch_norm: TeacherBatchNorm = "running",
        positions: Sequence[int] | None = None,
    ) -> list[Outputs]:
        """Logits and features of every stacked teacher (or those at ``positions``).

        Args:
            x: the input batch, shared by the teachers.
            batch_norm: ``"running"`` or ``"batch"``, as in
                :meth:`~avalanche_m2kd.snapshots.FrozenTeacher.run`.
            positions: indices into the stack (a copy of their weights is gathered for
                this call); ``None``: all.

        Returns:
            One ``(logits, features)`` per teacher, float32.
        """
        params, buffers = self.params, self.buffers
        if positions is not None and list(positions) != list(range(self.size)):
            params = {n: torch.stack([p[i] for i in positions]) for n, p in params.items()}
            buffers = {n: torch.stack([b[i] for i in positions]) for n, b in buffers.items()}
        norms = self._batch_norms if batch_norm == "batch" else []
        for m in norms:  # batch statistics, nothing in place: what vmap allows
            m.training, m.track_running_stats = True, False
        try:
            if self.dtype is None:
                logits, features = vmap(self._forward, in_dims=(0, 0, None))(params, buffers, x)
            else:
                x = x.to(self.dtype) if x.is_floating_point() else x
                with torch.autocast(x.device.type, enabled=False):
                    logits, features = vmap(self._forward, in_dims=(0, 0, None))(params, buffers, x)
        finally:
            for m in norms:
                m.training, m.track_running_stats = False, True
        n = logits.shape[0]
        return [
            (_float32(logits[i]), {s: _float32(f[i]) for s, f in features.items()})
            for i in range(n)
        ]


def _streams(device: torch.device, n: int) -> list[torch.cuda.Stream]:
    pool = _STREAMS.setdefault(device, [])
    while len(pool) < n:
        pool.append(torch.cuda.Stream(device=device))
    return pool[:n]


_STREAMS: dict[torch.device, list] = {}


def run_on_streams(
    teachers: Sequence[FrozenTeacher],
    x: Tensor,
    batch_norm: TeacherBatchNorm = "running",
    dtype: torch.dtype | None = None,
) -> list[Outputs]:
    """:meth:`~avalanche_m2kd.snapshots.FrozenTeacher.run` of each teacher, each on its
    own CUDA stream; on another device, one after the other (the loop).

    Every side stream first waits for the current stream (``x`` is ready), the current
    stream then waits for all of them, and the tensors crossing streams are recorded
    on the stream that uses them (so the caching allocator does not reuse them early).
    Nothing waits on the host.
    """
    if x.device.type != "cuda":
        return [t.run(x, batch_norm, dtype) for t in teachers]
    current = torch.cuda.current_stream(x.device)
    streams = _streams(x.device, len(teachers))
    outputs = []
    for teacher, stream in zip(teachers, streams, strict=True):
        stream.wait_stream(current)
        x.record_stream(stream)
        with torch.cuda.stream(stream):
            outputs.append(teacher.run(x, batch_norm, dtype))
    for stream in streams:
        current.wait_stream(stream)
    for logits, features in outputs:
        for t in (logits, *features.values()):
            t.record_stream(current)
    return outputs


class TeacherStacks:
    """The stacks a :class:`~avalanche_m2kd.snapshots.SnapshotStore` keeps for ``"vmap"``.

    A store keeps one, built on first use and dropped with its teachers. Stacks are
    made per group of same-architecture teachers (all teachers passed in), per feature
    specs and dtype, and reused until then; a call for part of a group (``teacher_sample``)
    gathers that part's weights from the group's stack for the call.
    """

    def __init__(self) -> None:
        self._stacks: dict[tuple, StackedTeachers] = {}

    def nbytes(self) -> int:
        """Bytes of the stacks held."""
        return sum(s.nbytes() for s in self._stacks.values())

    def run(
        self,
        teachers: Sequence[FrozenTeacher],
        x: Tensor,
        batch_norm: TeacherBatchNorm,
        dtype: torch.dtype | None,
        batching: TeacherBatching,
        wanted: Sequence[int] | None = None,
        feature_specs: Sequence[str] = (),
    ) -> list[Outputs]:
        """Outputs of ``teachers[i]`` for each ``i`` in ``wanted`` (default: all).

        Args:
            teachers: every teacher that may be stacked with the wanted ones (the
                store's teachers, in snapshot order: stacks are keyed by position).
            x, batch_norm, dtype: as for :meth:`FrozenTeacher.run`.
            batching: ``"vmap"``, ``"streams"`` or ``"loop"``.
            wanted: positions in ``teachers`` to run.
            feature_specs: the layer specs the teachers capture.
        """
        check_choice(batching, TeacherBatching, "teacher_batching")
        wanted = list(range(len(teachers))) if wanted is None else list(wanted)
        if batching == "loop":
            return [teachers[i].run(x, batch_norm, dtype) for i in wanted]
        if batching == "streams":
            return run_on_streams([teachers[i] for i in wanted], x, batch_norm, dtype)
        groups: dict[tuple, list[int]] = {}
        for i, teacher in enumerate(teachers):
            groups.setdefault(_signature(teacher.module), []).append(i)
        outputs: dict[int, Outputs] = {}
        for members in groups.values():
            asked = [i for i in members if i in set(wanted)]
            if len(asked) == 1:
                outputs[asked[0]] = teachers[asked[0]].run(x, batch_norm, dtype)
            if len(asked) < 2:
                continue
            key = (tuple(members), tuple(feature_specs), dtype)
            stack = self._stacks.get(key)
            if stack is None or not stack.stacks([teachers[i] for i in members]):
                stack = self._stacks[key] = StackedTeachers(
                    [teachers[i] for i in members], feature_specs, dtype
                )
            positions = [members.index(i) for i in asked]
            for i, out in zip(asked, stack.run(x, batch_norm, positions), strict=True):
                outputs[i] = out
        return [outputs[i] for i in wanted]
