"""The ``snapshot_mode`` strings, turned into storage objects in this one place."""

from __future__ import annotations

from typing import Literal

from avalanche_m2kd.storage.base import FullStorage, SnapshotStorage
from avalanche_m2kd.storage.nested import NestedStorage
from avalanche_m2kd.storage.pruned import PrunedStorage, check_density

__all__ = ["SnapshotMode", "make_storage"]

SnapshotMode = Literal["nested", "pruned", "full"]
_MODES: dict[str, type[SnapshotStorage]] = {
    "nested": NestedStorage,
    "pruned": PrunedStorage,
    "full": FullStorage,
}


def make_storage(
    storage: SnapshotMode | SnapshotStorage, pruned_density: float | None = None
) -> SnapshotStorage:
    """The storage object for ``storage``: a ``snapshot_mode`` string, or an object.

    Args:
        storage: ``"nested"``, ``"pruned"`` or ``"full"``, or a
            :class:`SnapshotStorage`, returned as it is.
        pruned_density: :class:`PrunedStorage`'s ``density`` for ``"pruned"``
            (``None``: its default); checked whenever it is given, used only for
            ``"pruned"``.

    Raises:
        ValueError: an unknown mode, a density outside ``(0, 1]``, or a density
            given with a storage object (give it to the object instead).
    """
    if pruned_density is not None:
        check_density(pruned_density, "pruned_density")
    if isinstance(storage, SnapshotStorage):
        if pruned_density is not None:
            raise ValueError(
                f"Expected argument `pruned_density` to be None with a storage object, but "
                f"got {pruned_density!r}: pass PrunedStorage(density=...) instead"
            )
        return storage
    if not isinstance(storage, str) or storage not in _MODES:
        raise ValueError(
            f"Expected argument `snapshot_mode` to be one of {tuple(_MODES)} or a "
            f"SnapshotStorage, but got {storage!r}"
        )
    if storage == "pruned" and pruned_density is not None:
        return PrunedStorage(pruned_density)
    return _MODES[storage]()
