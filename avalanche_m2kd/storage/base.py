"""What every storage keeps of a snapshot: its small state, packed by dtype.

A snapshot's *small state* is every tensor of the model's ``state_dict`` that its
storage does not encode on its own: biases, normalisation parameters and statistics,
the classifier head (and, for :class:`FullStorage`, the prunable weights too). It is
kept as one flat tensor per dtype per snapshot, so that ``torch.save`` writes a few
large records rather than hundreds of small ones, plus a *layout* (name, dtype, shape)
shared by the snapshots that have the same one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["Classes", "FullStorage", "Names", "Record", "SnapshotStorage", "tensor_nbytes"]

#: One entry of a small-state layout: ``(name, dtype, full shape, head rows only)``.
Entry = tuple[str, str, tuple[int, ...], bool]
#: What a storage keeps of one snapshot (tensors, in dicts; the store never looks inside).
Record = dict[str, Any]
#: ``classes[k]``: the class ids introduced by experience ``k``.
Classes = Sequence[Sequence[int]]
#: Names of ``state_dict`` entries (the prunable weights).
Names = Sequence[str]


def tensor_nbytes(tensors: Any) -> int:
    """Bytes of the tensors in ``tensors`` (a tensor, or dicts / lists / tuples of them).

    Example:
        >>> tensor_nbytes({"a": torch.zeros(3), "b": [torch.zeros(2, dtype=torch.uint8)]})
        14
    """
    if isinstance(tensors, Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, dict):
        return sum(tensor_nbytes(v) for v in tensors.values())
    if isinstance(tensors, (list, tuple)):
        return sum(tensor_nbytes(v) for v in tensors)
    return 0


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
) -> tuple[list[Entry], dict[str, Tensor]]:
    """Concatenate ``tensors`` into one flat tensor per dtype (copies).

    The tensors named in ``row_names`` keep only the rows of ``classes``.

    Returns:
        ``(layout, data)``: the layout to rebuild them and the flat tensors by dtype.
    """
    layout: list[Entry] = []
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
    layout: Sequence[Entry], data: dict[str, Tensor], classes: Sequence[Sequence[int]]
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


def _entry_nbytes(entry: Entry, data: dict[str, Tensor], classes: Sequence[Sequence[int]]) -> int:
    name, dtype, shape, rows = entry
    numel = math.prod(shape)
    if rows:
        numel = len(_seen_rows(classes, shape[0], torch.device("cpu"))) * math.prod(shape[1:])
    return numel * data[dtype].element_size()


class SnapshotStorage:
    """How a :class:`~avalanche_m2kd.snapshots.SnapshotStore` keeps its snapshots.

    A storage encodes a finished model as one snapshot record (a dict of tensors),
    decodes a record back into the model's ``state_dict`` tensors, counts the bytes
    it holds and saves its state. This base class keeps each snapshot's small state
    (module docstring); a subclass adds how the *prunable* weights (the ``weight`` of
    the convolution and linear layers outside the head) are kept, in :meth:`encode`
    and :meth:`decode`. The store passes the records back to the storage that made
    them; it never looks inside one.

    Attributes:
        mode: the storage's name (``snapshot_mode``), saved with the store's state.
        copies_prunable: the prunable weights are part of the small state (copied
            whole) rather than encoded by the subclass.
        head_rows_only: the head keeps only the rows of the classes seen up to each
            snapshot (the rows of later classes come back as zeros).
        layouts: the distinct small-state layouts, indexed by the records.
    """

    mode: ClassVar[str] = ""
    copies_prunable: ClassVar[bool] = False
    head_rows_only: ClassVar[bool] = False

    def __init__(self) -> None:
        self.layouts: list[list[Entry]] = []

    def bind(self, model: nn.Module, head_name: str, prunable: Sequence[str]) -> None:
        """Check the live model and prepare for it (nothing here).

        Args:
            model: the live model.
            head_name: dotted name of its classifier head.
            prunable: the names of its prunable weights.
        """

    @torch.no_grad()
    def encode(self, model: nn.Module, head_name: str, prunable: Names, classes: Classes) -> Record:
        """The record of ``model`` as snapshot ``len(classes) - 1``.

        Args:
            model: the live model at the end of the experience.
            head_name: dotted name of its classifier head.
            prunable: the names of its prunable weights.
            classes: the classes of every experience up to this one.
        """
        state = model.state_dict()
        skip = set() if self.copies_prunable else set(prunable)
        small = {n: t for n, t in state.items() if n not in skip}
        rows = _head_row_names(model, head_name, small) if self.head_rows_only else set()
        layout, data = _pack_state(small, rows, classes)
        if layout not in self.layouts:
            self.layouts.append(layout)
        return {"data": data, "layout": self.layouts.index(layout)}

    def decode(
        self, record: Record, classes: Classes, model: nn.Module, keep_unpacked: bool = False
    ) -> dict[str, Tensor]:
        """Snapshot ``k``'s ``state_dict`` tensors, rebuilt from its ``record``.

        Args:
            record: what :meth:`encode` returned for snapshot ``k``.
            classes: the classes of experiences ``0..k`` (so ``k = len(classes) - 1``).
            model: the live model.
            keep_unpacked: the caller rebuilds teachers often; a storage may keep
                what it unpacks until its next change (:meth:`cache_nbytes`).
        """
        return _unpack_state(self.layouts[record["layout"]], record["data"], classes)

    def nbytes(self, records: Sequence[Record]) -> int:
        """Bytes of the tensors kept to rebuild every snapshot (``records`` included)."""
        return tensor_nbytes(list(records))

    def nbytes_by_name(self, records: Sequence[Record], classes: Classes) -> dict[str, int]:
        """:meth:`nbytes` by ``state_dict`` name (here: the small state's entries)."""
        out: dict[str, int] = {}
        for k, record in enumerate(records):
            for entry in self.layouts[record["layout"]]:
                size = _entry_nbytes(entry, record["data"], classes[: k + 1])
                out[entry[0]] = out.get(entry[0], 0) + size
        return out

    def cache_nbytes(self) -> int:
        """Bytes kept unpacked for :meth:`decode` (``keep_unpacked``); none here."""
        return 0

    def release_cache(self) -> None:
        """Free what :meth:`decode` kept unpacked."""

    def state_dict(self) -> dict[str, Any]:
        """The storage's own entries of the store's state (plain values and tensors)."""
        return {"layouts": [[[n, d, list(s), r] for n, d, s, r in lay] for lay in self.layouts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` from the store's state ``state``.

        Raises:
            ValueError: the state does not fit this storage (subclasses check it all
                before changing anything).
        """
        self.layouts = [
            [(n, d, tuple(int(x) for x in s), bool(r)) for n, d, s, r in lay]
            for lay in state["layouts"]
        ]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FullStorage(SnapshotStorage):
    """Plain copies of the model's whole ``state_dict``: exact teachers, the most bytes.

    The reference for memory: ``T`` snapshots hold ``T`` copies of the model.
    """

    mode: ClassVar[str] = "full"
    copies_prunable: ClassVar[bool] = True
