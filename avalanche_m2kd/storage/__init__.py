"""How a snapshot store keeps its snapshots: one class per storage mode.

A :class:`~avalanche_m2kd.snapshots.SnapshotStore` is handed a storage object and
never branches on which one it holds (as Avalanche's ``ReplayPlugin`` is handed its
``storage_policy``):

* :class:`NestedStorage` — owner indices, every snapshot inside the live network
  (the paper's memory idea); exact, provided the owned weights stay frozen, which
  :class:`~avalanche_m2kd.plugins.NestedTrainingPlugin` enforces.
* :class:`PrunedStorage` — each snapshot magnitude-pruned to ``density`` and kept on
  its own; the student trains freely, teachers approximate the snapshots.
* :class:`FullStorage` — plain copies; exact, the reference for memory.

The strings of ``snapshot_mode`` (``"nested"``, ``"pruned"``, ``"full"``) are turned
into these objects in one place, :func:`~avalanche_m2kd.storage.modes.make_storage`.

Example:
    >>> make_storage("pruned", pruned_density=0.25)
    PrunedStorage(density=0.25)
    >>> make_storage(NestedStorage()).mode
    'nested'
"""

from __future__ import annotations

from avalanche_m2kd.storage.base import FullStorage, SnapshotStorage, tensor_nbytes
from avalanche_m2kd.storage.modes import SnapshotMode, make_storage
from avalanche_m2kd.storage.nested import NestedStorage
from avalanche_m2kd.storage.pruned import PrunedStorage

__all__ = [
    "FullStorage",
    "NestedStorage",
    "PrunedStorage",
    "SnapshotMode",
    "SnapshotStorage",
    "make_storage",
    "tensor_nbytes",
]
