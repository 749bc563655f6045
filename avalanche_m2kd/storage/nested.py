"""Nested snapshots: one owner index per prunable weight, every snapshot inside one network."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from avalanche_m2kd.pruning import (
    MAX_SNAPSHOTS,
    owner_bits,
    pack_uints,
    prune_free_weights,
    unpack_uints,
)
from avalanche_m2kd.storage.base import Classes, Names, Record, SnapshotStorage, tensor_nbytes

__all__ = ["NestedStorage"]


class NestedStorage(SnapshotStorage):
    """Mask-based pruning (the paper's memory idea, PackNet-style).

    Every prunable weight has an owner index: ``0`` free, ``k + 1`` kept by
    experience ``k`` and frozen from then on (:mod:`avalanche_m2kd.pruning`).
    Snapshot ``k`` is the live weights masked to ``1 <= owner <= k + 1``, plus its
    small state, whose head keeps only the rows of the classes seen up to ``k``
    (the others are zero in its teacher). It is **bit-exact** provided the owned
    weights stay frozen, which :class:`~avalanche_m2kd.plugins.NestedTrainingPlugin`
    enforces while the live model trains.

    The owners are bit-packed in :attr:`owner_bits` ``= ceil(log2(T + 1))`` bits for
    ``T`` snapshots (re-packed one bit wider when :meth:`prune` needs it), up to
    :data:`~avalanche_m2kd.pruning.MAX_SNAPSHOTS` snapshots. How much of each layer
    an experience keeps is the caller's schedule (:meth:`prune`'s ``keep``).

    Attributes:
        owner_bits: bits per prunable weight of the packed owners, ``0`` while every
            weight is free.
    """

    mode: ClassVar[str] = "nested"
    head_rows_only: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.owner_bits = 0
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._packed: dict[str, Tensor] = {}
        self._unpacked: dict[str, Tensor] | None = None  # owner - 1, kept by decode

    def bind(self, model: nn.Module, head_name: str, prunable: Sequence[str]) -> None:
        """Give every prunable weight an owner (free) and move the owners to its device.

        Raises:
            ValueError: the model has no prunable layer, or one whose shape is not
                the one the owners were recorded for.
        """
        self._unpacked = None
        if not prunable:
            raise ValueError(
                "snapshot_mode='nested' needs prunable conv/linear layers outside the "
                f"head {head_name!r}, but the model has none: use snapshot_mode='full'"
            )
        params = dict(model.named_parameters())
        shapes = {n: tuple(params[n].shape) for n in prunable}
        if self._shapes and shapes != self._shapes:
            changed = [n for n in prunable if shapes[n] != self._shapes.get(n)]
            raise ValueError(
                f"The prunable layer {changed[0]!r} has shape {shapes[changed[0]]} but "
                f"the store recorded {self._shapes.get(changed[0])}: the store "
                "belongs to another architecture"
            )
        if not self._packed:  # every weight free: 0 bits each
            self.owner_bits = 0
            self._packed = {n: pack_uints(torch.zeros(0, dtype=torch.uint8), 0) for n in prunable}
        self._shapes = shapes
        self._packed = {n: self._packed[n].to(params[n].device) for n in prunable}

    # ------------------------------------------------------------------ owners
    def owner(self, name: str) -> Tensor:
        """The ``uint8`` owner indices of prunable layer ``name``.

        A fresh tensor unpacked from the stored bits (changing it changes nothing
        in the storage), on the live weight's device.

        Raises:
            KeyError: ``name`` is not a prunable layer of a bound storage.
        """
        if name not in self._packed:
            raise KeyError(
                f"{name!r} has no owner indices: expected one of the prunable layers "
                f"{list(self._packed)[:3]}... of a bound snapshot_mode='nested' store"
            )
        return unpack_uints(self._packed[name], self.owner_bits, self._shapes[name])

    @property
    def owners(self) -> dict[str, Tensor]:
        """:meth:`owner` of every prunable layer (unpacked copies)."""
        return {n: self.owner(n) for n in self._packed}

    def free_masks(self) -> dict[str, Tensor]:
        """Bool mask of the free (trainable) weights of each layer."""
        return {n: o == 0 for n, o in self.owners.items()}

    def free_fractions(self) -> dict[str, float]:
        """Fraction of free weights per prunable layer."""
        return {n: float((o == 0).float().mean()) for n, o in self.owners.items()}

    @torch.no_grad()
    def prune(self, model: nn.Module, experience: int, keep: float) -> dict[str, Tensor]:
        """End-of-experience pruning of the free weights, layer by layer.

        The largest ``keep`` fraction (by magnitude) of each layer's free weights is
        given to owner ``experience + 1`` and frozen from then on; the rest is set to
        zero in ``model`` and stays free for later experiences. The owners are
        re-packed, one bit wider when ``experience + 1`` needs it.

        Args:
            model: the live model, bound (its released weights are zeroed in place).
            experience: the 0-based experience that ends.
            keep: fraction of each layer's free weights it keeps, in ``[0, 1]``.

        Returns:
            The bool mask of released (zeroed) weights of each layer.

        Raises:
            ValueError: ``experience + 1`` exceeds :data:`MAX_SNAPSHOTS`.
            RuntimeError: the storage was not bound to a model.
        """
        if experience + 1 > MAX_SNAPSHOTS:
            raise ValueError(
                f"the nested store holds at most {MAX_SNAPSHOTS} snapshots: use "
                "snapshot_mode='pruned' or 'full' for a longer stream"
            )
        if not self._packed:
            raise RuntimeError("bind(model) the nested storage before prune()")
        bits = max(self.owner_bits, owner_bits(experience + 1))
        params = dict(model.named_parameters())
        packed, released_masks = {}, {}
        for name in self._packed:
            owner, released = prune_free_weights(
                params[name], self.owner(name), experience + 1, keep
            )
            packed[name] = pack_uints(owner, bits)
            params[name].masked_fill_(released, 0.0)
            released_masks[name] = released
        self._packed, self.owner_bits = packed, bits
        self._unpacked = None
        return released_masks

    # -------------------------------------------------------------- snapshots
    @torch.no_grad()
    def encode(self, model: nn.Module, head_name: str, prunable: Names, classes: Classes) -> Record:
        """The small state only: the owned weights stay in the live model.

        Raises:
            RuntimeError: a free weight is not zero (no :meth:`prune` before).
        """
        state = model.state_dict()
        unowned = [n for n in prunable if bool(((self.owner(n) == 0) & (state[n] != 0)).any())]
        if unowned:
            raise RuntimeError(
                f"nested snapshot {len(classes) - 1} has non-zero free weights in {unowned[:3]}: "
                "call prune() before record()"
            )
        return super().encode(model, head_name, prunable, classes)

    def decode(
        self, record: Record, classes: Classes, model: nn.Module, keep_unpacked: bool = False
    ) -> dict[str, Tensor]:
        """The small state, and the live prunable weights masked to ``1 <= owner <= k + 1``."""
        tensors = super().decode(record, classes, model)
        k = len(classes) - 1
        params = dict(model.named_parameters())
        # owner - 1 wraps free weights (owner 0) to 255 in uint8, so snapshot k's
        # mask, 1 <= owner <= k + 1 (snapshot_mask), is one comparison: < k + 1.
        shifted = self._unpacked
        if shifted is None:
            shifted = {n: o - 1 for n, o in self.owners.items()}
            if keep_unpacked:  # rebuilt every step: unpack once per prune
                self._unpacked = shifted
        for n, owner in shifted.items():
            w = params[n].detach()
            mask = owner.to(w.device) < k + 1
            tensors[n] = torch.where(mask, w, torch.zeros((), dtype=w.dtype, device=w.device))
        return tensors

    # -------------------------------------------------------------- accounting
    def nbytes(self, records: Sequence[Record]) -> int:
        """The packed owners, ``ceil(numel * owner_bits / 8)`` bytes per layer, and the records."""
        return tensor_nbytes(self._packed) + super().nbytes(records)

    def nbytes_by_name(self, records: Sequence[Record], classes: Classes) -> dict[str, int]:
        """A prunable layer counts its packed owners."""
        owners = {n: tensor_nbytes(t) for n, t in self._packed.items()}
        return {**owners, **super().nbytes_by_name(records, classes)}

    def cache_nbytes(self) -> int:
        """The unpacked owners :meth:`decode` keeps (1 byte per prunable weight)."""
        return tensor_nbytes(self._unpacked or {})

    def release_cache(self) -> None:
        """Free the unpacked owners."""
        self._unpacked = None

    def state_dict(self) -> dict[str, Any]:
        """The layouts, ``owner_bits``, ``owner_shapes`` and the packed ``owners``."""
        return {
            **super().state_dict(),
            "owner_bits": self.owner_bits,
            "owner_shapes": {n: list(s) for n, s in self._shapes.items()},
            "owners": dict(self._packed),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ValueError: packed owners whose size does not match their shape and width.
        """
        shapes = {n: tuple(int(d) for d in s) for n, s in state["owner_shapes"].items()}
        bits = int(state["owner_bits"])
        for n, packed in state["owners"].items():  # fail now, not at the first teacher
            expected = (math.prod(shapes[n]) * bits + 7) // 8
            if packed.numel() != expected or packed.dtype != torch.uint8:
                raise ValueError(
                    f"The saved owners of {n!r} hold {packed.numel()} bytes, not the "
                    f"{expected} of {shapes[n]} weights at {bits} bits: the state is corrupt"
                )
        super().load_state_dict(state)
        self.owner_bits, self._shapes, self._packed = bits, shapes, dict(state["owners"])
        self._unpacked = None
