"""The snapshot store: every previous model, kept inside (or beside) one network.

Snapshot ``k`` is the model as it stood at the end of experience ``k`` (0-based).
:class:`SnapshotStore` records them and rebuilds any of them on demand as a
:class:`FrozenTeacher`. Three storage modes share one interface (SPEC, "Snapshots"):

* ``"nested"`` — mask-based pruning (the paper's memory idea, PackNet-style): one
  ``uint8`` owner index per prunable weight plus each snapshot's small state
  (biases, normalisation parameters and statistics, the classifier head). Snapshot
  ``k`` = live weights masked to ``1 <= owner <= k + 1``: **bit-exact**, provided the
  owned weights stay frozen, which :class:`~avalanche_m2kd.plugins.SnapshotMaskingPlugin`
  enforces.
* ``"pruned"`` — each finished snapshot magnitude-pruned to ``1 - prune_ratio``
  density and stored on its own (bit mask + kept fp32 values + small state); the
  student trains without frozen weights; teachers *approximate* the snapshots.
* ``"full"`` — plain copies of the whole state; exact, the reference for memory.

*Prunable* weights are the ``weight`` tensors of convolution and linear layers
outside the classifier head; everything else in the ``state_dict`` is per-snapshot
state. :meth:`SnapshotStore.nbytes` counts exactly what the store holds beyond the
live model, and :meth:`SnapshotStore.state_dict` holds that same state (never the
live weights).
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Optional, Sequence

import torch
from torch import Tensor, nn

from avalanche_m2kd.features import FeatureCapture, find_head
from avalanche_m2kd.pruning import (
    MAX_SNAPSHOTS,
    magnitude_keep_mask,
    pack_bits,
    prune_free_weights,
    snapshot_mask,
    unpack_bits,
)

__all__ = ["FrozenTeacher", "SnapshotMode", "SnapshotStore", "prunable_weight_names"]

SnapshotMode = Literal["nested", "pruned", "full"]
_MODES = ("nested", "pruned", "full")
_PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


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
    """Replace parameter or buffer ``name`` of ``module`` (its shape may change)."""
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if attr in owner._parameters:
        owner._parameters[attr] = nn.Parameter(value, requires_grad=False)
    elif attr in owner._buffers:
        owner._buffers[attr] = value
    else:
        raise KeyError(f"{name!r} is neither a parameter nor a buffer of the model")


class FrozenTeacher(nn.Module):
    """A rebuilt snapshot that can never train.

    It stays in eval mode whatever the caller does (``train()`` is a no-op), all its
    parameters have ``requires_grad=False`` and every forward runs under
    ``torch.no_grad``. :meth:`run` also returns the features captured at the layer
    specs given to :meth:`capture`, and memoises its last call: calling it twice
    with the *same* input tensor object (two plugins distilling from one teacher in
    one iteration) runs the network once.

    Args:
        module: the network, already loaded with the snapshot's weights.
        feature_specs: layer specs to capture (see :mod:`avalanche_m2kd.features`).
    """

    def __init__(self, module: nn.Module, feature_specs: Sequence[str] = ()) -> None:
        super().__init__()
        self.module = module.requires_grad_(False)
        self._specs: list[str] = []
        self._capture: Optional[FeatureCapture] = None
        self._memo: Optional[tuple[Tensor, Tensor, dict[str, Tensor]]] = None
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
        self._memo = None

    @torch.no_grad()
    def run(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and captured features for ``x`` (memoised on the last input)."""
        if self._memo is not None and self._memo[0] is x:
            return self._memo[1], self._memo[2]
        logits = self.module(x)
        features = dict(self._capture.features) if self._capture is not None else {}
        self._memo = (x, logits, features)
        return logits, features

    def forward(self, x: Tensor) -> Tensor:
        """The snapshot's logits for ``x``."""
        return self.run(x)[0]


class SnapshotStore:
    """Keeps every finished experience's model and rebuilds it as a teacher.

    Args:
        mode: ``"nested"``, ``"pruned"`` or ``"full"`` (see the module docstring).
        head_name: dotted name of the classifier head; found with
            :func:`~avalanche_m2kd.features.find_head` when ``None``.
        pruned_density: fraction of each prunable weight tensor kept by a
            ``"pruned"`` snapshot.

    Attributes:
        classes: ``classes[k]`` are the class ids introduced by experience ``k``.

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
        self.owners: dict[str, Tensor] = {}
        self._snapshots: list[dict[str, dict[str, Tensor]]] = []
        self._model: Optional[nn.Module] = None
        self._teachers: dict[int, FrozenTeacher] = {}
        self._feature_specs: list[str] = []

    # ------------------------------------------------------------------ set-up
    def bind(self, model: nn.Module) -> None:
        """Attach the live model (the store reads its frozen weights in ``nested``)."""
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
        params = dict(model.named_parameters())
        if not self.owners and self.mode == "nested":
            self.owners = {
                n: torch.zeros(params[n].shape, dtype=torch.uint8, device=params[n].device)
                for n in prunable
            }
        if self.mode == "nested" and not prunable:
            raise ValueError(
                "snapshot_mode='nested' needs prunable conv/linear layers outside the "
                f"head {self.head_name!r}, but the model has none: use snapshot_mode='full'"
            )
        for n in prunable:
            if n in self.owners and self.owners[n].device != params[n].device:
                self.owners[n] = self.owners[n].to(params[n].device)
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
        zero in ``model`` and stays free for later experiences.

        Returns:
            The bool mask of released (zeroed) weights of each layer.
        """
        if self.mode != "nested":
            raise RuntimeError(f"prune() is for snapshot_mode='nested', not {self.mode!r}")
        if experience + 1 > MAX_SNAPSHOTS:
            raise ValueError(f"the nested store holds at most {MAX_SNAPSHOTS} snapshots")
        params = dict(model.named_parameters())
        released_masks = {}
        for name in self.prunable:
            owner, released = prune_free_weights(
                params[name], self.owners[name], experience + 1, keep
            )
            self.owners[name] = owner
            params[name].masked_fill_(released, 0.0)
            released_masks[name] = released
        return released_masks

    # ---------------------------------------------------------------- recording
    @torch.no_grad()
    def record(self, model: nn.Module, classes: Sequence[int]) -> None:
        """Store ``model`` as the snapshot of the experience that introduced ``classes``.

        In ``nested`` mode call :meth:`prune` first: the store keeps only the small
        per-snapshot state and relies on the owned weights staying frozen.
        """
        if self._model is None:
            self.bind(model)
        state = model.state_dict()
        small = {n: t.detach().clone() for n, t in state.items() if n not in self.prunable}
        snapshot: dict[str, dict[str, Tensor]] = {"state": small}
        if self.mode == "full":
            snapshot["state"] = {n: t.detach().clone() for n, t in state.items()}
        elif self.mode == "pruned":
            snapshot["masks"], snapshot["values"] = {}, {}
            for n in self.prunable:
                keep = magnitude_keep_mask(state[n], self.pruned_density)
                snapshot["masks"][n] = pack_bits(keep)
                snapshot["values"][n] = state[n][keep].detach().clone()
        else:
            unowned = [n for n in self.prunable if bool(((self.owners[n] == 0) & (state[n] != 0)).any())]
            if unowned:
                raise RuntimeError(
                    f"nested snapshot {len(self)} has non-zero free weights in {unowned[:3]}: "
                    "call prune() before record()"
                )
        self._snapshots.append(snapshot)
        self.classes.append([int(c) for c in classes])
        self.release_teachers()

    # ----------------------------------------------------------------- teachers
    def _snapshot_tensors(self, k: int) -> dict[str, Tensor]:
        snap = self._snapshots[k]
        tensors = dict(snap["state"])
        if self.mode == "nested":
            params = dict(self._model.named_parameters())  # type: ignore[union-attr]
            for n in self.prunable:
                w = params[n].detach()
                mask = snapshot_mask(self.owners[n], k + 1)
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
        or :meth:`release_teachers`.
        """
        if not 0 <= k < len(self):
            raise IndexError(f"no snapshot {k}: the store holds {len(self)}")
        if k not in self._teachers:
            if self._model is None:
                raise RuntimeError("bind(model) the store before asking for teachers")
            module = copy.deepcopy(self._model)
            for m in module.modules():  # the student's hooks must not fire in a teacher
                m._forward_hooks.clear()
                m._forward_pre_hooks.clear()
                m._backward_hooks.clear()
            for p in module.parameters():
                p.grad = None
            for name, tensor in self._snapshot_tensors(k).items():
                _set_tensor(module, name, tensor)
            self._teachers[k] = FrozenTeacher(module, self._feature_specs)
        return self._teachers[k]

    def release_teachers(self) -> None:
        """Free every materialised teacher (they are rebuilt on demand)."""
        self._teachers.clear()

    # ------------------------------------------------------------ accounting
    def nbytes(self) -> int:
        """Bytes the store holds to rebuild every snapshot, beyond the live model.

        ``nested``: the owner indices (1 byte per prunable weight) and each
        snapshot's small state; ``pruned``: bit masks, kept values and small states;
        ``full``: the complete copies.
        """
        return _tensor_bytes(self.owners) + _tensor_bytes(self._snapshots)

    def state_dict(self) -> dict[str, Any]:
        """The store's own state (no live weights), for ``torch.save``."""
        return {
            "mode": self.mode,
            "head_name": self.head_name,
            "pruned_density": self.pruned_density,
            "classes": [list(c) for c in self.classes],
            "prunable": list(self.prunable),
            "owners": dict(self.owners),
            "snapshots": self._snapshots,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the mode must match this store's."""
        if state["mode"] != self.mode:
            raise ValueError(
                f"The saved store is in mode {state['mode']!r}, this one is {self.mode!r}"
            )
        self.head_name = state["head_name"]
        self.pruned_density = state["pruned_density"]
        self.classes = [list(c) for c in state["classes"]]
        self.prunable = list(state["prunable"])
        self.owners = dict(state["owners"])
        self._snapshots = list(state["snapshots"])
        self.release_teachers()
        if self._model is not None:
            self.bind(self._model)
