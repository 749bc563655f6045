"""The snapshot store: every previous model, kept inside (or beside) one network.

Snapshot ``k`` is the model as it stood at the end of experience ``k`` (0-based).
:class:`SnapshotStore` records them and rebuilds any of them on demand as a
:class:`FrozenTeacher`. Three storage modes share one interface (SPEC, "Snapshots"):

* ``"nested"`` — mask-based pruning (the paper's memory idea, PackNet-style): one
  owner index per prunable weight, bit-packed in ``ceil(log2(T + 1))`` bits for ``T``
  snapshots (4 bits up to 15 snapshots; the width grows by re-packing as snapshots
  arrive, up to 8 bits for :data:`~avalanche_m2kd.pruning.MAX_SNAPSHOTS`), plus each
  snapshot's small state (biases, normalisation parameters and statistics, and the
  classifier-head rows of the classes seen so far). Snapshot ``k`` = live weights
  masked to ``1 <= owner <= k + 1``: **bit-exact**, provided the owned weights stay
  frozen, which :class:`~avalanche_m2kd.plugins.SnapshotMaskingPlugin` enforces. The
  head rows of classes a snapshot had not seen are not stored: they are zero in its
  teacher (no distillation loss reads them), so teacher ``k``'s logits are bit-exact
  on the classes of experiences ``0..k`` and ``0`` on the others (an
  ``IncrementalClassifier`` masks those anyway).
* ``"pruned"`` — each finished snapshot magnitude-pruned to ``pruned_density`` and
  stored on its own (bit mask + kept fp32 values + small state); the student trains
  without frozen weights; teachers *approximate* the snapshots.
* ``"full"`` — plain copies of the whole state; exact, the reference for memory.

*Prunable* weights are the ``weight`` tensors of convolution and linear layers
outside the classifier head; everything else in the ``state_dict`` is per-snapshot
*small state*, kept as one flat tensor per dtype per snapshot (so that ``torch.save``
writes a few large records rather than hundreds of small ones).
:meth:`SnapshotStore.nbytes` counts exactly the tensors the store holds beyond the
live model, and :meth:`SnapshotStore.state_dict` holds those same tensors (never the
live weights) plus a little plain-Python metadata.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal, Optional, Sequence

import torch
from torch import Tensor, nn

from avalanche_m2kd.features import FeatureCapture, find_head
from avalanche_m2kd.pruning import (
    MAX_SNAPSHOTS,
    magnitude_keep_mask,
    owner_bits,
    pack_bits,
    pack_uints,
    prune_free_weights,
    unpack_bits,
    unpack_uints,
)

__all__ = [
    "FrozenTeacher",
    "SnapshotMode",
    "SnapshotStore",
    "TeacherBatchNorm",
    "prunable_weight_names",
    "validate_teacher_dtype",
]

SnapshotMode = Literal["nested", "pruned", "full"]
TeacherBatchNorm = Literal["batch", "running"]
_BN_MODES = ("batch", "running")
_MODES = ("nested", "pruned", "full")
_PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


def validate_teacher_dtype(
    dtype: Optional[torch.dtype], device_type: Optional[str] = None, name: str = "teacher_dtype"
) -> Optional[torch.dtype]:
    """The checked autocast dtype of teacher forwards (``None``: full fp32).

    Args:
        dtype: ``None`` or ``torch.float32`` (no autocast; returned as ``None``),
            ``torch.bfloat16`` (any device), or ``torch.float16`` (not on CPU: its
            CPU kernels are slow — a ResNet-32 teacher forward, batch 128, took
            5.2 s against 0.19 s in fp32 and 0.07 s in bf16 on our 2-core CPU).
        device_type: the device the teachers run on (``"cpu"``, ``"cuda"``, ...);
            ``None`` checks only the dtype.
        name: the argument's name in the error message.

    Raises:
        ValueError: another dtype, or ``float16`` on ``"cpu"``.

    Example:
        >>> validate_teacher_dtype(torch.bfloat16, "cpu")
        torch.bfloat16
        >>> validate_teacher_dtype(torch.float32) is None
        True
    """
    if dtype is None or dtype == torch.float32:
        return None
    if dtype not in _AUTOCAST_DTYPES:
        raise ValueError(
            f"Expected argument `{name}` to be None, torch.float32, torch.bfloat16 or "
            f"torch.float16, but got {dtype!r}"
        )
    if dtype == torch.float16 and device_type == "cpu":
        raise ValueError(
            f"Expected argument `{name}` to be None or torch.bfloat16 on CPU, but got "
            "torch.float16: float16 autocast runs ~28x slower than float32 on CPU; "
            "use torch.bfloat16"
        )
    return dtype


def _as_float32(t: Tensor) -> Tensor:
    return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t


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


def _tensor_bytes(tensors: Any) -> int:
    if isinstance(tensors, Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, dict):
        return sum(_tensor_bytes(v) for v in tensors.values())
    if isinstance(tensors, (list, tuple)):
        return sum(_tensor_bytes(v) for v in tensors)
    return 0


def _set_tensor(module: nn.Module, name: str, value: Tensor) -> None:
    """Replace parameter or buffer ``name`` of ``module`` (its shape may change).

    ``value`` moves to the device of the tensor it replaces.
    """
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if attr in owner._parameters:
        old = owner._parameters[attr]
        value = value.to(old.device) if old is not None else value
        owner._parameters[attr] = nn.Parameter(value, requires_grad=False)
    elif attr in owner._buffers:
        old = owner._buffers[attr]
        owner._buffers[attr] = value.to(old.device) if old is not None else value
    else:
        raise KeyError(f"{name!r} is neither a parameter nor a buffer of the model")


def _match_memory_format(module: nn.Module, like: nn.Module) -> None:
    """Give the parameters of ``module`` the strides of ``like``'s of the same shape.

    A teacher's rebuilt weights are contiguous; a student in ``torch.channels_last``
    (faster on our CPU, see the README's "Cost") gets teachers in the same
    layout, so that they run the snapshot's kernels (and stay bit-exact).
    """
    live = dict(like.named_parameters())
    for name, p in module.named_parameters():
        ref = live.get(name)
        if ref is not None and ref.shape == p.shape and ref.stride() != p.stride():
            p.data = torch.empty_like(ref, dtype=p.dtype, device=p.device).copy_(p.data)


class FrozenTeacher(nn.Module):
    """A rebuilt snapshot that can never train.

    It stays in eval mode whatever the caller does (``train()`` is a no-op), all its
    parameters have ``requires_grad=False`` and every forward runs under
    ``torch.no_grad``. :meth:`run` also returns the features captured at the layer
    specs given to :meth:`capture`. Every call runs the network (no memo: an input
    changed in place gives new outputs); de-duplication within a training step is
    :meth:`SnapshotStore.run_teacher`'s.

    Args:
        module: the network, already loaded with the snapshot's weights.
        feature_specs: layer specs to capture (see :mod:`avalanche_m2kd.features`).
    """

    def __init__(self, module: nn.Module, feature_specs: Sequence[str] = ()) -> None:
        super().__init__()
        self.module = module.requires_grad_(False)
        self._specs: list[str] = []
        self._capture: Optional[FeatureCapture] = None
        self._batch_norms = [
            m
            for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        self.capture(feature_specs)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":  # noqa: D102 - always eval
        return super().train(False)

    def capture(self, specs: Sequence[str]) -> None:
        """Also capture these layer specs from now on."""
        new = [s for s in specs if s not in self._specs]
        if not new:
            return
        if self._capture is not None:
            self._capture.detach()
        self._specs += new
        self._capture = FeatureCapture(self.module, self._specs).attach()

    @torch.no_grad()
    def run(
        self,
        x: Tensor,
        batch_norm: TeacherBatchNorm = "running",
        dtype: Optional[torch.dtype] = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and captured features for ``x``.

        Args:
            x: the input batch.
            batch_norm: ``"running"`` (default) normalises with the snapshot's stored
                BatchNorm statistics, exactly as the snapshot did in eval mode;
                ``"batch"`` normalises with the statistics of ``x`` itself, as the
                student does in training mode (the stored statistics are neither used
                nor changed). Other layers (dropout, ...) stay in eval mode.
            dtype: ``None`` (default) runs in the weights' precision;
                ``torch.bfloat16`` (or ``torch.float16``, not on CPU) runs the
                forward under ``torch.autocast`` on ``x``'s device type, and the
                logits and features come back as float32 (see
                :func:`validate_teacher_dtype`). The weights stay fp32.

        Raises:
            ValueError: an unknown ``batch_norm``, or a ``dtype`` that
                :func:`validate_teacher_dtype` rejects for ``x``'s device.
        """
        if batch_norm not in _BN_MODES:
            raise ValueError(
                f"Expected argument `batch_norm` to be one of {_BN_MODES}, but got {batch_norm!r}"
            )
        dtype = validate_teacher_dtype(dtype, x.device.type, "dtype")
        norms = self._batch_norms if batch_norm == "batch" else []
        for m in norms:
            m.training, m.track_running_stats = True, False
        try:
            if dtype is None:  # as before: under the caller's autocast, if any
                logits = self.module(x)
            else:
                with torch.autocast(x.device.type, dtype=dtype):
                    logits = self.module(x)
        finally:
            for m in norms:
                m.training, m.track_running_stats = False, True
        features = dict(self._capture.features) if self._capture is not None else {}
        if dtype is not None:
            logits = _as_float32(logits)
            features = {spec: _as_float32(t) for spec, t in features.items()}
        return logits, features

    def nbytes(self) -> int:
        """Bytes of the teacher's parameters and buffers (its dense weights)."""
        return _tensor_bytes(list(self.module.parameters()) + list(self.module.buffers()))

    def forward(self, x: Tensor) -> Tensor:
        """The snapshot's logits for ``x``."""
        return self.run(x)[0]


#: Version of :meth:`SnapshotStore.state_dict`'s layout.
_FORMAT = 2

#: One entry of a small-state layout: ``(name, dtype, full shape, head rows only)``.
_Entry = tuple[str, str, tuple[int, ...], bool]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _head_row_names(model: nn.Module, head_name: str, state: dict[str, Tensor]) -> set[str]:
    """Head tensors with one row per output unit (class): weight, bias, masks.

    The number of units is the ``out_features`` of the head's last ``nn.Linear``;
    a head without one has no row tensors (it is then stored whole).
    """
    linears = [m for m in model.get_submodule(head_name).modules() if isinstance(m, nn.Linear)]
    if not linears:
        return set()
    n_out, prefix = linears[-1].out_features, head_name + "."
    return {
        n for n, t in state.items() if n.startswith(prefix) and t.dim() >= 1 and t.shape[0] == n_out
    }


def _seen_rows(classes: Sequence[Sequence[int]], n_rows: int, device: torch.device) -> Tensor:
    """Sorted indices of the head rows of ``classes`` (those below ``n_rows``)."""
    seen = sorted({c for exp in classes for c in exp if 0 <= c < n_rows})
    return torch.tensor(seen, dtype=torch.long, device=device)


def _pack_state(
    tensors: dict[str, Tensor], row_names: set[str], classes: Sequence[Sequence[int]]
) -> tuple[list[_Entry], dict[str, Tensor]]:
    """Concatenate ``tensors`` into one flat tensor per dtype (copies).

    The tensors named in ``row_names`` keep only the rows of ``classes``.

    Returns:
        ``(layout, data)``: the layout to rebuild them and the flat tensors by dtype.
    """
    layout: list[_Entry] = []
    groups: dict[str, list[Tensor]] = {}
    for name, t in tensors.items():
        t = t.detach()
        rows = name in row_names
        if rows:
            t = t[_seen_rows(classes, t.shape[0], t.device)]
        dtype = _dtype_name(t.dtype)
        layout.append((name, dtype, tuple(tensors[name].shape), rows))
        groups.setdefault(dtype, []).append(t.reshape(-1))
    return layout, {d: torch.cat(ts) for d, ts in groups.items()}


def _unpack_state(
    layout: Sequence[_Entry], data: dict[str, Tensor], classes: Sequence[Sequence[int]]
) -> dict[str, Tensor]:
    """Inverse of :func:`_pack_state`; head rows not stored come back as zeros."""
    offsets = dict.fromkeys(data, 0)
    tensors = {}
    for name, dtype, shape, rows in layout:
        flat, start = data[dtype], offsets[dtype]
        if rows:
            seen = _seen_rows(classes, shape[0], flat.device)
            n = len(seen) * math.prod(shape[1:])
            full = torch.zeros(shape, dtype=flat.dtype, device=flat.device)
            full[seen] = flat[start : start + n].view(len(seen), *shape[1:])
            tensors[name] = full
        else:
            n = math.prod(shape)
            tensors[name] = flat[start : start + n].view(shape).clone()
        offsets[dtype] = start + n
    return tensors


def _entry_nbytes(entry: _Entry, data: dict[str, Tensor], classes: Sequence[Sequence[int]]) -> int:
    name, dtype, shape, rows = entry
    numel = math.prod(shape)
    if rows:
        numel = len(_seen_rows(classes, shape[0], torch.device("cpu"))) * math.prod(shape[1:])
    return numel * data[dtype].element_size()


class SnapshotStore:
    """Keeps every finished experience's model and rebuilds it as a teacher.

    Args:
        mode: ``"nested"``, ``"pruned"`` or ``"full"`` (see the module docstring).
        head_name: dotted name of the classifier head; found with
            :func:`~avalanche_m2kd.features.find_head` when ``None``.
        pruned_density: fraction of each prunable weight tensor kept by a
            ``"pruned"`` snapshot.
        cache_teachers: ``True`` (default) keeps every teacher :meth:`teacher`
            built until the next :meth:`record` (one dense model per snapshot);
            ``False`` holds at most one at a time (see :attr:`cache_teachers`).

    Attributes:
        classes: ``classes[k]`` are the class ids introduced by experience ``k``.
        owner_bits: ``nested``: bits per prunable weight of the packed owner
            indices, ``ceil(log2(T + 1))`` once owners ``1..T`` were given (0 while
            every weight is free); grows when :meth:`prune` needs a larger owner.

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
        mode: SnapshotMode = "nested",
        head_name: Optional[str] = None,
        pruned_density: float = 0.5,
        cache_teachers: bool = True,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(
                f"Expected argument `snapshot_mode` to be one of {_MODES}, but got {mode!r}"
            )
        if not 0.0 < pruned_density <= 1.0:
            raise ValueError(
                f"Expected `pruned_density` to be a float in (0, 1], but got {pruned_density}"
            )
        self.mode: SnapshotMode = mode
        self.head_name = head_name
        self.pruned_density = pruned_density
        self.classes: list[list[int]] = []
        self.prunable: list[str] = []
        self.owner_bits = 0
        self._owner_shapes: dict[str, tuple[int, ...]] = {}
        self._packed_owners: dict[str, Tensor] = {}
        self._layouts: list[list[_Entry]] = []
        self._snapshots: list[dict[str, Any]] = []
        self._model: Optional[nn.Module] = None
        self._teachers: dict[int, FrozenTeacher] = {}
        self._feature_specs: list[str] = []
        self._owner_cache: Optional[dict[str, Tensor]] = None
        self._step_outputs: dict[tuple, tuple[Tensor, int, tuple[Tensor, dict[str, Tensor]]]] = {}
        self._stacks: Optional[Any] = None  # batched_teachers.TeacherStacks, for run_teachers
        self.cache_teachers = cache_teachers

    @property
    def cache_teachers(self) -> bool:
        """Whether built teachers stay materialised until the next :meth:`record`.

        ``True``: each teacher is built once per experience and kept, so ``T``
        snapshots hold ``T`` dense models. ``False``: :meth:`teacher` frees the
        teacher it holds before building another, so at most one dense model is
        held, and the distillation plugins also free it after each training
        iteration; every step then rebuilds its teachers (in ``nested`` mode,
        from the live weights and the owner indices, which the store then keeps
        unpacked until the next :meth:`prune`: 1 byte per prunable weight, a
        quarter of an fp32 model, so that a rebuild does not unpack them again).
        Setting it to ``False`` frees the teachers held. Measured by
        ``benchmarks/teacher_memory.py``.

        Raises:
            ValueError: set to something other than a bool.
        """
        return self._cache_teachers

    @cache_teachers.setter
    def cache_teachers(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"Expected argument `cache_teachers` to be a bool, but got {value!r}")
        self._cache_teachers = value
        self._owner_cache = None
        if not value:
            self.release_teachers()

    # ------------------------------------------------------------------ set-up
    def bind(self, model: nn.Module) -> None:
        """Attach the live model (the store reads its frozen weights in ``nested``).

        Raises:
            ValueError: the model's prunable layers (names or shapes) are not the
                store's, or ``nested`` mode meets a model without prunable layers.
        """
        self._owner_cache = None
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
        if self.mode == "nested" and not prunable:
            raise ValueError(
                "snapshot_mode='nested' needs prunable conv/linear layers outside the "
                f"head {self.head_name!r}, but the model has none: use snapshot_mode='full'"
            )
        params = dict(model.named_parameters())
        if self.mode == "nested":
            shapes = {n: tuple(params[n].shape) for n in prunable}
            if self._owner_shapes and shapes != self._owner_shapes:
                changed = [n for n in prunable if shapes[n] != self._owner_shapes.get(n)]
                raise ValueError(
                    f"The prunable layer {changed[0]!r} has shape {shapes[changed[0]]} but "
                    f"the store recorded {self._owner_shapes.get(changed[0])}: the store "
                    "belongs to another architecture"
                )
            if not self._packed_owners:  # every weight free: 0 bits each
                self.owner_bits = 0
                self._packed_owners = {
                    n: pack_uints(torch.zeros(0, dtype=torch.uint8), 0) for n in prunable
                }
            self._owner_shapes = shapes
            self._packed_owners = {
                n: self._packed_owners[n].to(params[n].device) for n in prunable
            }
        self.prunable = prunable
        self._model = model

    def capture_features(self, specs: Sequence[str]) -> None:
        """Make every teacher capture these layer specs (for feature distillation)."""
        self._feature_specs += [s for s in specs if s not in self._feature_specs]
        for teacher in self._teachers.values():
            teacher.capture(self._feature_specs)

    def __len__(self) -> int:
        return len(self._snapshots)

    # ------------------------------------------------------------------ nested
    def owner(self, name: str) -> Tensor:
        """``nested``: the ``uint8`` owner indices of prunable layer ``name``.

        A fresh tensor unpacked from the stored bits (changing it changes nothing
        in the store), on the live weight's device.

        Raises:
            KeyError: ``name`` is not a prunable layer of a bound ``nested`` store.
        """
        if name not in self._packed_owners:
            raise KeyError(
                f"{name!r} has no owner indices: expected one of the prunable layers "
                f"{self.prunable[:3]}... of a bound snapshot_mode='nested' store"
            )
        return unpack_uints(self._packed_owners[name], self.owner_bits, self._owner_shapes[name])

    @property
    def owners(self) -> dict[str, Tensor]:
        """``nested``: :meth:`owner` of every prunable layer (unpacked copies)."""
        return {n: self.owner(n) for n in self._packed_owners}

    def free_masks(self) -> dict[str, Tensor]:
        """``nested``: bool mask of the free (trainable) weights of each layer."""
        return {n: o == 0 for n, o in self.owners.items()}

    def free_fractions(self) -> dict[str, float]:
        """``nested``: fraction of free weights per prunable layer."""
        return {n: float((o == 0).float().mean()) for n, o in self.owners.items()}

    @torch.no_grad()
    def prune(self, model: nn.Module, experience: int, keep: float) -> dict[str, Tensor]:
        """``nested``: end-of-experience pruning of the free weights, layer by layer.

        The largest ``keep`` fraction (by magnitude) of each layer's free weights is
        given to owner ``experience + 1`` and frozen from then on; the rest is set to
        zero in ``model`` and stays free for later experiences. The owners are
        re-packed, one bit wider when ``experience + 1`` needs it.

        Args:
            model: the live model (its released weights are zeroed in place).
            experience: the 0-based experience that ends.
            keep: fraction of each layer's free weights it keeps, in ``[0, 1]``.

        Returns:
            The bool mask of released (zeroed) weights of each layer.

        Raises:
            RuntimeError: the store is not ``nested``.
            ValueError: ``experience + 1`` exceeds :data:`MAX_SNAPSHOTS`.
        """
        if self.mode != "nested":
            raise RuntimeError(f"prune() is for snapshot_mode='nested', not {self.mode!r}")
        if experience + 1 > MAX_SNAPSHOTS:
            raise ValueError(
                f"the nested store holds at most {MAX_SNAPSHOTS} snapshots: use "
                "snapshot_mode='pruned' or 'full' for a longer stream"
            )
        if self._model is None:
            self.bind(model)
        bits = max(self.owner_bits, owner_bits(experience + 1))
        params = dict(model.named_parameters())
        packed, released_masks = {}, {}
        for name in self.prunable:
            owner, released = prune_free_weights(
                params[name], self.owner(name), experience + 1, keep
            )
            packed[name] = pack_uints(owner, bits)
            params[name].masked_fill_(released, 0.0)
            released_masks[name] = released
        self._packed_owners, self.owner_bits = packed, bits
        self._owner_cache = None
        return released_masks

    # ---------------------------------------------------------------- recording
    @torch.no_grad()
    def record(self, model: nn.Module, classes: Sequence[int]) -> None:
        """Store ``model`` as the snapshot of the experience that introduced ``classes``.

        In ``nested`` mode call :meth:`prune` first: the store keeps only the small
        per-snapshot state (with the head rows of the classes seen so far) and
        relies on the owned weights staying frozen.

        Raises:
            RuntimeError: ``nested``, and a free weight is not zero (no :meth:`prune`).
        """
        if self._model is None:
            self.bind(model)
        state = model.state_dict()
        seen = [*self.classes, [int(c) for c in classes]]
        snapshot: dict[str, Any] = {}
        if self.mode == "nested":
            unowned = [
                n for n in self.prunable if bool(((self.owner(n) == 0) & (state[n] != 0)).any())
            ]
            if unowned:
                raise RuntimeError(
                    f"nested snapshot {len(self)} has non-zero free weights in {unowned[:3]}: "
                    "call prune() before record()"
                )
        small = {n: t for n, t in state.items() if self.mode == "full" or n not in self.prunable}
        rows = set()
        if self.mode == "nested":  # the other modes keep the whole head
            rows = _head_row_names(model, self.head_name, small)  # type: ignore[arg-type]
        layout, snapshot["data"] = _pack_state(small, rows, seen)
        if layout not in self._layouts:
            self._layouts.append(layout)
        snapshot["layout"] = self._layouts.index(layout)
        if self.mode == "pruned":
            snapshot["masks"], snapshot["values"] = {}, {}
            for n in self.prunable:
                keep = magnitude_keep_mask(state[n], self.pruned_density)
                snapshot["masks"][n] = pack_bits(keep)
                snapshot["values"][n] = state[n][keep].detach().clone()
        self._snapshots.append(snapshot)
        self.classes.append(seen[-1])
        self.release_teachers()

    # ----------------------------------------------------------------- teachers
    def _snapshot_tensors(self, k: int) -> dict[str, Tensor]:
        snap = self._snapshots[k]
        tensors = _unpack_state(self._layouts[snap["layout"]], snap["data"], self.classes[: k + 1])
        if self.mode == "nested":
            params = dict(self._model.named_parameters())  # type: ignore[union-attr]
            # owner - 1 wraps free weights (owner 0) to 255 in uint8, so snapshot k's
            # mask, 1 <= owner <= k + 1 (snapshot_mask), is one comparison: < k + 1.
            shifted = self._owner_cache
            if shifted is None:
                shifted = {n: o - 1 for n, o in self.owners.items()}
                if not self._cache_teachers:  # rebuilt every step: unpack once per prune
                    self._owner_cache = shifted
            for n in self.prunable:
                w = params[n].detach()
                mask = shifted[n].to(w.device) < k + 1
                tensors[n] = torch.where(mask, w, torch.zeros((), dtype=w.dtype, device=w.device))
        elif self.mode == "pruned":
            params = dict(self._model.named_parameters())  # type: ignore[union-attr]
            for n in self.prunable:
                shape = params[n].shape
                mask = unpack_bits(snap["masks"][n], shape).to(snap["values"][n].device)
                w = torch.zeros(shape, dtype=snap["values"][n].dtype, device=mask.device)
                w[mask] = snap["values"][n]
                tensors[n] = w
        return tensors

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
            # The prunable weights are all replaced below: copy empty stand-ins
            # rather than the live weights (the bulk of the model's bytes).
            params = dict(self._model.named_parameters())
            memo: dict[int, Any] = {
                id(params[n]): nn.Parameter(params[n].new_empty(0), requires_grad=False)
                for n in self.prunable
            }
            module = copy.deepcopy(self._model, memo)
            for m in module.modules():  # the student's hooks must not fire in a teacher
                m._forward_hooks.clear()
                m._forward_pre_hooks.clear()
                m._backward_hooks.clear()
            for p in module.parameters():
                p.grad = None
            for name, tensor in self._snapshot_tensors(k).items():
                _set_tensor(module, name, tensor)
            _match_memory_format(module, self._model)
            self._teachers[k] = FrozenTeacher(module, self._feature_specs)
        return self._teachers[k]

    def run_teacher(
        self,
        k: int,
        x: Tensor,
        batch_norm: TeacherBatchNorm = "running",
        dtype: Optional[torch.dtype] = None,
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
        out = self.teacher(k).run(x, batch_norm, dtype)
        self._step_outputs[key] = (x, x._version, out)
        return out

    def run_teachers(
        self,
        ids: Sequence[int],
        x: Tensor,
        batch_norm: TeacherBatchNorm = "running",
        dtype: Optional[torch.dtype] = None,
        batching: str = "loop",
    ) -> list[tuple[Tensor, dict[str, Tensor]]]:
        """:meth:`run_teacher` of each teacher in ``ids``, run together with ``batching``.

        ``"loop"`` (default) is :meth:`run_teacher` in turn; ``"vmap"`` and
        ``"streams"`` run the teachers not yet run this step on ``x`` together (see
        :mod:`avalanche_m2kd.batched_teachers`: same results to float rounding, same
        features) and keep their outputs for the step as :meth:`run_teacher` does.
        With :attr:`cache_teachers` off they run in the loop (batching needs every
        teacher held at once).
        """
        todo = [k for k in dict.fromkeys(ids) if not self._ran_this_step(k, x, batch_norm, dtype)]
        if batching != "loop" and self._cache_teachers and len(todo) > 1:
            from avalanche_m2kd.batched_teachers import TeacherStacks  # it imports this module

            if self._stacks is None:
                self._stacks = TeacherStacks()
            teachers = [self.teacher(k) for k in range(len(self))]
            outputs = self._stacks.run(teachers, x, batch_norm, dtype, batching, todo, self._feature_specs)
            for k, out in zip(todo, outputs):
                self._step_outputs[(k, batch_norm, dtype)] = (x, x._version, out)
        return [self.run_teacher(k, x, batch_norm, dtype) for k in ids]

    def _ran_this_step(self, k: int, x: Tensor, batch_norm: str, dtype: Optional[torch.dtype]) -> bool:
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

        The dense weights (parameters and buffers) of the teachers held, plus, with
        :attr:`cache_teachers` off in ``nested`` mode, the unpacked owner indices
        kept for rebuilding (1 byte per prunable weight), and the stacked copies
        :meth:`run_teachers` makes for ``batching="vmap"``. With caching on, ``T``
        snapshots hold up to ``T`` dense models (``2T`` with ``vmap``); off, at most
        one plus the owners.
        """
        dense = sum(t.nbytes() for t in self._teachers.values())
        stacked = self._stacks.nbytes() if self._stacks is not None else 0  # teacher_batching="vmap"
        return dense + stacked + _tensor_bytes(self._owner_cache or {})

    # ------------------------------------------------------------ accounting
    def nbytes(self) -> int:
        """Bytes of the tensors the store holds to rebuild every snapshot.

        ``nested``: the bit-packed owner indices (``ceil(numel * owner_bits / 8)``
        bytes per prunable layer) plus each snapshot's small state, whose head
        tensors hold only the rows of the classes seen up to that snapshot.
        ``pruned``: per snapshot, bit masks, kept values and small state. ``full``:
        the complete copies. The live model is not counted, nor the plain-Python
        metadata (class lists, tensor layouts: a few KiB), nor transient tensors:
        the unpacked owners that :meth:`owner`, :meth:`free_masks` or a teacher
        build create (1 byte per weight, freed when the caller drops them), and
        the materialised teachers (:meth:`teacher_nbytes` counts those, with the
        owners kept unpacked when :attr:`cache_teachers` is off).

        Returns:
            The total, equal to ``sum(self.nbytes_by_name().values())``.
        """
        return _tensor_bytes(self._packed_owners) + _tensor_bytes(self._snapshots)

    def nbytes_by_name(self) -> dict[str, int]:
        """:meth:`nbytes` broken down by the model's ``state_dict`` names.

        A prunable layer counts its packed owners (``nested``) or its masks and
        kept values summed over snapshots (``pruned``); every other tensor counts
        its stored copies summed over snapshots.
        """
        out = {n: _tensor_bytes(t) for n, t in self._packed_owners.items()}
        for k, snap in enumerate(self._snapshots):
            for entry in self._layouts[snap["layout"]]:
                size = _entry_nbytes(entry, snap["data"], self.classes[: k + 1])
                out[entry[0]] = out.get(entry[0], 0) + size
            for part in ("masks", "values"):
                for n, t in snap.get(part, {}).items():
                    out[n] = out.get(n, 0) + _tensor_bytes(t)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The store's own state (no live weights), for ``torch.save``.

        Only tensors and plain Python values, so ``torch.load(weights_only=True)``
        reads it back; the tensors are those :meth:`nbytes` counts.
        """
        return {
            "format": _FORMAT,
            "mode": self.mode,
            "head_name": self.head_name,
            "pruned_density": self.pruned_density,
            "classes": [list(c) for c in self.classes],
            "prunable": list(self.prunable),
            "owner_bits": self.owner_bits,
            "owner_shapes": {n: list(s) for n, s in self._owner_shapes.items()},
            "owners": dict(self._packed_owners),
            "layouts": [[[n, d, list(s), r] for n, d, s, r in lay] for lay in self._layouts],
            "snapshots": [dict(s) for s in self._snapshots],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the mode must match this store's.

        Raises:
            ValueError: another mode, another format version, or packed owners whose
                size does not match their shape and width.
        """
        if state.get("format") != _FORMAT:
            raise ValueError(
                f"The saved store has format {state.get('format')!r}, this version reads "
                f"format {_FORMAT}: save it again with this version of avalanche-m2kd"
            )
        if state["mode"] != self.mode:
            raise ValueError(
                f"The saved store is in mode {state['mode']!r}, this one is {self.mode!r}"
            )
        shapes = {n: tuple(int(d) for d in s) for n, s in state["owner_shapes"].items()}
        bits = int(state["owner_bits"])
        for n, packed in state["owners"].items():  # fail now, not at the first teacher
            expected = (math.prod(shapes[n]) * bits + 7) // 8
            if packed.numel() != expected or packed.dtype != torch.uint8:
                raise ValueError(
                    f"The saved owners of {n!r} hold {packed.numel()} bytes, not the "
                    f"{expected} of {shapes[n]} weights at {bits} bits: the state is corrupt"
                )
        self.head_name = state["head_name"]
        self.pruned_density = state["pruned_density"]
        self.classes = [list(c) for c in state["classes"]]
        self.prunable = list(state["prunable"])
        self.owner_bits = bits
        self._owner_shapes = shapes
        self._packed_owners = dict(state["owners"])
        self._owner_cache = None
        self._layouts = [
            [(n, d, tuple(int(x) for x in s), bool(r)) for n, d, s, r in lay]
            for lay in state["layouts"]
        ]
        self._snapshots = [dict(s) for s in state["snapshots"]]
        self.release_teachers()
        if self._model is not None:
            self.bind(self._model)
