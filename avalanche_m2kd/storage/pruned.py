"""Pruned copies: each snapshot's prunable weights magnitude-pruned and stored apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from avalanche_m2kd.pruning import magnitude_keep_mask, pack_bits, unpack_bits
from avalanche_m2kd.storage.base import Classes, Names, Record, SnapshotStorage, tensor_nbytes

__all__ = ["PrunedStorage"]


def check_density(density: Any, name: str = "density") -> float:
    """Return ``density`` if it is a number in ``(0, 1]``, else raise a ``ValueError``."""
    ok = not isinstance(density, bool) and isinstance(density, (int, float))
    if not ok or not 0.0 < density <= 1.0:
        raise ValueError(f"Expected argument `{name}` to be a float in (0, 1], but got {density!r}")
    return float(density)


class PrunedStorage(SnapshotStorage):
    """Each finished snapshot pruned by magnitude and stored on its own.

    Per snapshot and prunable layer, a bit mask of the kept weights and their fp32
    values, beside the snapshot's small state (the whole head included). The student
    trains without frozen weights; teachers *approximate* the snapshots (their
    smallest weights are zero).

    Args:
        density: the fraction of each prunable weight tensor a snapshot keeps, by
            magnitude, in ``(0, 1]``. Default ``0.5`` (ours: half of each layer).

    Example:
        >>> storage = PrunedStorage(density=0.25)
        >>> storage.density, storage.mode
        (0.25, 'pruned')
    """

    mode: ClassVar[str] = "pruned"

    def __init__(self, density: float = 0.5) -> None:
        super().__init__()
        self.density = check_density(density)

    @torch.no_grad()
    def encode(self, model: nn.Module, head_name: str, prunable: Names, classes: Classes) -> Record:
        """The small state, plus ``masks`` (bit-packed) and kept ``values`` by layer."""
        record = super().encode(model, head_name, prunable, classes)
        state = model.state_dict()
        record["masks"], record["values"] = {}, {}
        for n in prunable:
            keep = magnitude_keep_mask(state[n], self.density)
            record["masks"][n] = pack_bits(keep)
            record["values"][n] = state[n][keep].detach().clone()
        return record

    def decode(
        self, record: Record, classes: Classes, model: nn.Module, keep_unpacked: bool = False
    ) -> dict[str, Tensor]:
        """The small state, and each prunable weight: its kept values, zeros elsewhere."""
        tensors = super().decode(record, classes, model)
        params = dict(model.named_parameters())
        for n, values in record["values"].items():
            shape = params[n].shape
            mask = unpack_bits(record["masks"][n], shape).to(values.device)
            w = torch.zeros(shape, dtype=values.dtype, device=mask.device)
            w[mask] = values
            tensors[n] = w
        return tensors

    def nbytes_by_name(self, records: Sequence[Record], classes: Classes) -> dict[str, int]:
        """A prunable layer counts its masks and kept values, summed over snapshots."""
        out = super().nbytes_by_name(records, classes)
        for record in records:
            for part in ("masks", "values"):
                for n, t in record[part].items():
                    out[n] = out.get(n, 0) + tensor_nbytes(t)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The layouts and ``pruned_density``."""
        return {**super().state_dict(), "pruned_density": self.density}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the saved density replaces this storage's."""
        density = check_density(state["pruned_density"], "pruned_density")
        super().load_state_dict(state)
        self.density = density

    def __repr__(self) -> str:
        return f"PrunedStorage(density={self.density})"
