"""The snapshot store: every previous model, kept inside (or beside) one network.

Snapshot ``k`` is the model as it stood at the end of experience ``k`` (0-based).
:class:`SnapshotStore` records them and rebuilds any of them on demand as a
:class:`~avalanche_m2kd.frozen_teacher.FrozenTeacher`. How the snapshots are kept is
the store's *storage* object (:mod:`avalanche_m2kd.storage`): nested owner indices
(the default, the paper's memory idea), pruned copies or full copies. The store holds
what they share: the binding to the live model, the classes of each experience, the
snapshot records, the teachers built from them (cached or not), the per-step and
per-sample caches of their outputs (:meth:`SnapshotStore.run_teacher`), and its
``state_dict``.

*Prunable* weights are the ``weight`` tensors of convolution and linear layers
outside the classifier head (:func:`prunable_weight_names`); everything else in the
``state_dict`` is per-snapshot *small state*. :meth:`SnapshotStore.nbytes` counts
exactly the tensors the store holds beyond the live model, and
:meth:`SnapshotStore.state_dict` holds those same tensors (never the live weights)
plus a little plain-Python metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from avalanche_m2kd.batched_teachers import TeacherBatching, TeacherStacks
from avalanche_m2kd.features import find_head
from avalanche_m2kd.frozen_teacher import FrozenTeacher, TeacherBatchNorm
from avalanche_m2kd.frozen_teacher import validate_teacher_dtype as validate_teacher_dtype
from avalanche_m2kd.options import check_bool
from avalanche_m2kd.output_cache import SampleOutputCache
from avalanche_m2kd.storage import NestedStorage, SnapshotMode, SnapshotStorage, make_storage

# FrozenTeacher, TeacherBatchNorm, validate_teacher_dtype (avalanche_m2kd.frozen_teacher)
# and SnapshotMode (avalanche_m2kd.storage) are importable from here too, as before.
__all__ = ["SnapshotStore", "prunable_weight_names"]

_PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

#: Version of :meth:`SnapshotStore.state_dict`'s layout; 3 keeps only the entries of
#: the store's storage (2 wrote the nested and pruned entries in every mode).
_FORMAT = 3
_READS = (2, 3)


def prunable_weight_names(model: nn.Module, head_name: str) -> list[str]:
    """Names of the conv/linear ``weight`` parameters outside the head subtree."""
    prefix = head_name + "."
    return [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, _PRUNABLE_TYPES)
        and name != head_name
        and not name.startswith(prefix)
        and isinstance(getattr(module, "weight", None), nn.Parameter)
    ]


class SnapshotStore:
    """Keeps every finished experience's model and rebuilds it as a teacher.

    Args:
        storage: how snapshots are kept: a :class:`~avalanche_m2kd.storage.SnapshotStorage`
            object, or ``"nested"`` (default), ``"pruned"`` or ``"full"``, turned into
            one by :func:`~avalanche_m2kd.storage.modes.make_storage`.
        head_name: dotted name of the classifier head; found with
            :func:`~avalanche_m2kd.features.find_head` when ``None``.
        pruned_density: with ``storage="pruned"``, the
            :class:`~avalanche_m2kd.storage.PrunedStorage` ``density`` (``None``: its
            default, 0.5).
        cache_teachers: ``True`` (default) keeps every teacher :meth:`teacher`
            built until the next :meth:`record` (one dense model per snapshot);
            ``False`` holds at most one at a time (see :attr:`cache_teachers`).

    Attributes:
        storage: the storage object.
        classes: ``classes[k]`` are the class ids introduced by experience ``k``.
        prunable: the names of the bound model's prunable weights.
        output_cache: the :class:`~avalanche_m2kd.output_cache.SampleOutputCache` of the
            teachers run with ``batch_norm="running"``, emptied by :meth:`record`.

    Example:
        >>> store = SnapshotStore("full")
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> store.bind(net)
        >>> store.record(net, classes=[0, 1])
        >>> len(store), torch.equal(store.teacher(0)(torch.ones(1, 4)), net(torch.ones(1, 4)))
        (1, True)
    """

    def __init__(
        self,
        storage: SnapshotMode | SnapshotStorage = "nested",
        head_name: str | None = None,
        pruned_density: float | None = None,
        cache_teachers: bool = True,
    ) -> None:
        self.storage = make_storage(storage, pruned_density)
        self.head_name = head_name
        self.classes: list[list[int]] = []
        self.prunable: list[str] = []
        self._records: list[dict[str, Any]] = []
        self._model: nn.Module | None = None
        self._teachers: dict[int, FrozenTeacher] = {}
        self._feature_specs: list[str] = []
        self._step_outputs: dict[tuple, tuple[Tensor, int, tuple[Tensor, dict[str, Tensor]]]] = {}
        self._stacks: Any | None = None  # batched_teachers.TeacherStacks, for run_teachers
        self.output_cache = SampleOutputCache()
        self.cache_teachers = cache_teachers

    @property
    def mode(self) -> str:
        """Name of the storage (``"nested"``, ``"pruned"``, ``"full"``, or another's)."""
        return self.storage.mode

    @property
    def cache_teachers(self) -> bool:
        """Whether built teachers stay materialised until the next :meth:`record`.

        ``True``: each teacher is built once per experience and kept, so ``T``
        snapshots hold ``T`` dense models. ``False``: :meth:`teacher` frees the
        teacher it holds before building another, so at most one dense model is
        held, and the distillation plugins also free it after each training
        iteration; every step then rebuilds its teachers (with nested storage, from
        the live weights and the owner indices, which the storage then keeps
        unpacked until the next prune: 1 byte per prunable weight, a quarter of an
        fp32 model, so that a rebuild does not unpack them again). Setting it to
        ``False`` frees the teachers held.

        Raises:
            ValueError: set to something other than a bool.
        """
        return self._cache_teachers

    @cache_teachers.setter
    def cache_teachers(self, value: bool) -> None:
        self._cache_teachers = check_bool(value, "cache_teachers")
        self.storage.release_cache()
        if not value:
            self.release_teachers()

    # ------------------------------------------------------------------ set-up
    def bind(self, model: nn.Module) -> None:
        """Attach the live model (nested storage reads its frozen weights).

        Raises:
            ValueError: the model's prunable layers (names or shapes) are not the
                store's, or nested storage meets a model without prunable layers.
        """
        if self.head_name is None:
            self.head_name = find_head(model)
        else:
            find_head(model, self.head_name)
        prunable = prunable_weight_names(model, self.head_name)
        if self.prunable and prunable != self.prunable:
            raise ValueError(
                "The model's prunable layers changed since the store was created "
                f"({len(self.prunable)} then, {len(prunable)} now): the store belongs "
                "to another architecture"
            )
        self.storage.bind(model, self.head_name, prunable)
        self.prunable = prunable
        if model is not self._model:  # nested teachers are read from the live weights
            self.output_cache.clear()
        self._model = model

    def capture_features(self, specs: Sequence[str]) -> None:
        """Make every teacher capture these layer specs (for feature distillation)."""
        new = [s for s in specs if s not in self._feature_specs]
        if new:  # kept rows lack the new features
            self.output_cache.clear()
        self._feature_specs += new
        for teacher in self._teachers.values():
            teacher.capture(self._feature_specs)

    def __len__(self) -> int:
        return len(self._records)

    # ------------------------------------------------------- nested storage
    def _nested(self, what: str) -> NestedStorage:
        if not isinstance(self.storage, NestedStorage):
            raise RuntimeError(f"{what} is for snapshot_mode='nested', not {self.mode!r}")
        return self.storage

    @property
    def owner_bits(self) -> int:
        """Nested storage's ``owner_bits`` (see
        :class:`~avalanche_m2kd.storage.NestedStorage`); ``0`` for a storage without
        owner indices."""
        return getattr(self.storage, "owner_bits", 0)

    def owner(self, name: str) -> Tensor:
        """:meth:`NestedStorage.owner <avalanche_m2kd.storage.NestedStorage.owner>`."""
        return self._nested("owner()").owner(name)

    @property
    def owners(self) -> dict[str, Tensor]:
        """:attr:`NestedStorage.owners <avalanche_m2kd.storage.NestedStorage.owners>`."""
        return self._nested("owners").owners

    def free_masks(self) -> dict[str, Tensor]:
        """:meth:`NestedStorage.free_masks <avalanche_m2kd.storage.NestedStorage.free_masks>`."""
        return self._nested("free_masks()").free_masks()

    def free_fractions(self) -> dict[str, float]:
        """:meth:`~avalanche_m2kd.storage.NestedStorage.free_fractions`."""
        return self._nested("free_fractions()").free_fractions()

    def prune(self, model: nn.Module, experience: int, keep: float) -> dict[str, Tensor]:
        """:meth:`NestedStorage.prune <avalanche_m2kd.storage.NestedStorage.prune>`,
        binding ``model`` first if no model is bound.

        Raises:
            RuntimeError: the storage is not nested.
        """
        storage = self._nested("prune()")
        if self._model is None:
            self.bind(model)
        return storage.prune(model, experience, keep)

    # ---------------------------------------------------------------- recording
    @torch.no_grad()
    def record(self, model: nn.Module, classes: Sequence[int]) -> None:
        """Store ``model`` as the snapshot of the experience that introduced ``classes``.

        With nested storage call :meth:`prune` first: the store keeps only the small
        per-snapshot state (with the head rows of the classes seen so far) and
        relies on the owned weights staying frozen.

        Raises:
            RuntimeError: nested storage, and a free weight is not zero (no :meth:`prune`).
        """
        if self._model is None:
            self.bind(model)
        seen = [*self.classes, [int(c) for c in classes]]
        assert self.head_name is not None  # bind() sets it, and a bound store stays bound
        self._records.append(self.storage.encode(model, self.head_name, self.prunable, seen))
        self.classes.append(seen[-1])
        self.release_teachers()
        self.output_cache.clear()

    # ----------------------------------------------------------------- teachers
    def teacher(self, k: int) -> FrozenTeacher:
        """Snapshot ``k`` (0-based experience index) as a frozen eval-mode module.

        Teachers are built on first use and cached until the next :meth:`record`
        or :meth:`release_teachers`; with :attr:`cache_teachers` off, building one
        first frees the one held, so at most one is materialised. A teacher's
        weights have the memory format (strides) of the live model's, e.g.
        ``torch.channels_last``.

        Raises:
            IndexError: there is no snapshot ``k``.
            RuntimeError: no model was bound.
        """
        if not 0 <= k < len(self):
            valid = f"0..{len(self) - 1}" if len(self) else "none yet"
            raise IndexError(
                f"no snapshot {k}: the store holds {len(self)} (valid indices: {valid}; "
                "snapshot k is the model at the end of experience k)"
            )
        if k not in self._teachers:
            if self._model is None:
                raise RuntimeError("bind(model) the store before asking for teachers")
            if not self._cache_teachers:
                self.release_teachers()
            tensors = self.storage.decode(
                self._records[k], self.classes[: k + 1], self._model, not self._cache_teachers
            )
            self._teachers[k] = FrozenTeacher.rebuild(self._model, tensors, self._feature_specs)
        return self._teachers[k]

    def run_teacher(
        self,
        k: int,
        x: Tensor,
        batch_norm: TeacherBatchNorm = "running",
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """:meth:`FrozenTeacher.run` of teacher ``k``, at most once per step and input.

        Within a training step (until :meth:`end_step`), a second call for the same
        teacher and options on the same, unmodified input tensor returns the first
        call's outputs: two plugins distilling from one teacher run it once, in
        either order. An input modified in place (its version counter moved) or
        another tensor runs the teacher again.

        Example:
            >>> store = SnapshotStore("full")
            >>> net = nn.Sequential(nn.Linear(4, 2))
            >>> store.bind(net); store.record(net, classes=[0, 1])
            >>> x = torch.ones(1, 4)
            >>> a, _ = store.run_teacher(0, x)
            >>> store.run_teacher(0, x)[0] is a, torch.equal(store.run_teacher(0, x.mul_(0))[0], a)
            (True, False)
        """
        key = (k, batch_norm, dtype)
        if self._ran_this_step(k, x, batch_norm, dtype):
            return self._step_outputs[key][2]

        def forward(v: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            return self.teacher(k).run(v, batch_norm, dtype)

        cache = self.output_cache.run if batch_norm == "running" else None  # per sample
        out = forward(x) if cache is None else cache((k, dtype), x, forward)
        self._step_outputs[key] = (x, x._version, out)
        return out

    def run_teachers(
        self,
        ids: Sequence[int],
        x: Tensor,
        batch_norm: TeacherBatchNorm = "running",
        dtype: torch.dtype | None = None,
        batching: TeacherBatching = "loop",
    ) -> list[tuple[Tensor, dict[str, Tensor]]]:
        """:meth:`run_teacher` of each teacher in ``ids``, run together with ``batching``.

        ``"loop"`` (default) is :meth:`run_teacher` in turn; ``"vmap"`` and
        ``"streams"`` run the teachers not yet run this step on ``x`` together (see
        :mod:`avalanche_m2kd.batched_teachers`: same results to float rounding, same
        features) and keep their outputs for the step as :meth:`run_teacher` does.
        With :attr:`cache_teachers` off they run in the loop (batching needs every
        teacher held at once) or :attr:`output_cache` applies (``batch_norm="running"``).
        """
        todo = [k for k in dict.fromkeys(ids) if not self._ran_this_step(k, x, batch_norm, dtype)]
        batched = batching != "loop" and self._cache_teachers and len(todo) > 1
        if batched and not (self.output_cache.enabled and batch_norm == "running"):
            if self._stacks is None:
                self._stacks = TeacherStacks()
            teachers = [self.teacher(k) for k in range(len(self))]
            outputs = self._stacks.run(
                teachers, x, batch_norm, dtype, batching, todo, self._feature_specs
            )
            for k, out in zip(todo, outputs, strict=True):
                self._step_outputs[(k, batch_norm, dtype)] = (x, x._version, out)
        return [self.run_teacher(k, x, batch_norm, dtype) for k in ids]

    def _ran_this_step(self, k: int, x: Tensor, batch_norm: str, dtype: torch.dtype | None) -> bool:
        hit = self._step_outputs.get((k, batch_norm, dtype))
        return hit is not None and hit[0] is x and hit[1] == x._version

    def end_step(self) -> None:
        """Forget the outputs :meth:`run_teacher` kept for this step."""
        self._step_outputs.clear()

    def release_teachers(self) -> None:
        """Free every materialised teacher (they are rebuilt on demand)."""
        self._teachers.clear()
        self._step_outputs.clear()
        self._stacks = None

    def held_teachers(self) -> list[int]:
        """Indices of the teachers materialised now, in increasing order."""
        return sorted(self._teachers)

    def teacher_nbytes(self) -> int:
        """Bytes the store holds now to serve teachers, beyond :meth:`nbytes`.

        The dense weights (parameters and buffers) of the teachers held, plus what
        the storage keeps unpacked for rebuilding (nested storage with
        :attr:`cache_teachers` off: the owner indices, 1 byte per prunable weight),
        and the stacked copies :meth:`run_teachers` makes for ``batching="vmap"``.
        With caching on, ``T`` snapshots hold up to ``T`` dense models (``2T`` with
        ``vmap``); off, at most one plus the owners. The rows of
        :attr:`output_cache` count too.
        """
        dense = sum(t.nbytes() for t in self._teachers.values())
        stacked = (
            self._stacks.nbytes() if self._stacks is not None else 0
        )  # teacher_batching="vmap"
        return dense + stacked + self.storage.cache_nbytes() + self.output_cache.nbytes()

    # ------------------------------------------------------------ accounting
    def nbytes(self) -> int:
        """Bytes of the tensors the store holds to rebuild every snapshot.

        Nested storage: the bit-packed owner indices (``ceil(numel * owner_bits /
        8)`` bytes per prunable layer) plus each snapshot's small state, whose head
        tensors hold only the rows of the classes seen up to that snapshot.
        Pruned: per snapshot, bit masks, kept values and small state. Full: the
        complete copies. The live model is not counted, nor the plain-Python
        metadata (class lists, tensor layouts: a few KiB), nor transient tensors:
        the unpacked owners that :meth:`owner`, :meth:`free_masks` or a teacher
        build create (1 byte per weight, freed when the caller drops them), and
        the materialised teachers (:meth:`teacher_nbytes` counts those, with the
        owners kept unpacked when :attr:`cache_teachers` is off).

        Returns:
            The total, equal to ``sum(self.nbytes_by_name().values())``.
        """
        return self.storage.nbytes(self._records)

    def nbytes_by_name(self) -> dict[str, int]:
        """:meth:`nbytes` broken down by the model's ``state_dict`` names.

        A prunable layer counts its packed owners (nested) or its masks and kept
        values summed over snapshots (pruned); every other tensor counts its stored
        copies summed over snapshots.
        """
        return self.storage.nbytes_by_name(self._records, self.classes)

    def state_dict(self) -> dict[str, Any]:
        """The store's own state (no live weights), for ``torch.save``.

        Only tensors and plain Python values, so ``torch.load(weights_only=True)``
        reads it back; the tensors are those :meth:`nbytes` counts. The storage's
        entries (:meth:`~avalanche_m2kd.storage.SnapshotStorage.state_dict`) sit
        beside the store's.
        """
        return {
            "format": _FORMAT,
            "mode": self.mode,
            "head_name": self.head_name,
            "classes": [list(c) for c in self.classes],
            "prunable": list(self.prunable),
            "snapshots": [dict(s) for s in self._records],
            **self.storage.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (this version's, or format 2's); the mode must match.

        Raises:
            ValueError: another mode, a format version this version does not read,
                or a state its storage refuses (e.g. packed owners whose size does not
                match their shape and width).
        """
        if state.get("format") not in _READS:
            raise ValueError(
                f"The saved store has format {state.get('format')!r}, this version reads "
                f"formats {_READS}: save it again with this version of avalanche-m2kd"
            )
        if state["mode"] != self.mode:
            raise ValueError(
                f"The saved store is in mode {state['mode']!r}, this one is {self.mode!r}"
            )
        self.storage.load_state_dict(state)
        self.head_name = state["head_name"]
        self.classes = [list(c) for c in state["classes"]]
        self.prunable = list(state["prunable"])
        self._records = [dict(s) for s in state["snapshots"]]
        self.release_teachers()
        self.output_cache.clear()
        if self._model is not None:
            self.bind(self._model)
