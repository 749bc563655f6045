"""Owner-index pruning and bit masks: the pure logic behind the snapshot store.

In the ``nested`` store every prunable weight carries an *owner index*: ``0`` means
free, ``k >= 1`` means the weight was kept at the end of experience ``k - 1``
(0-based experience ``k - 1`` has owner value ``k``) and is frozen from then on.
Snapshot ``k`` (0-based) is the live weight tensor masked to ``1 <= owner <= k + 1``.

The store keeps the owner indices bit-packed (:func:`pack_uints`), in
:func:`owner_bits` ``= ceil(log2(T + 1))`` bits each for ``T`` snapshots: 4 bits for up
to 15 snapshots, 8 for up to :data:`MAX_SNAPSHOTS`.

These functions are free of any Avalanche or module state, so that the arithmetic
(the fraction released per layer, the masks, the schedule, the packing) is
unit-tested on its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TypeAlias

import torch
from torch import Tensor

__all__ = [
    "FaithfulKeep",
    "PruneRatio",
    "keep_fraction",
    "magnitude_keep_mask",
    "owner_bits",
    "pack_bits",
    "pack_uints",
    "prune_free_weights",
    "snapshot_mask",
    "unpack_bits",
    "unpack_uints",
    "validate_prune_ratio",
]

@dataclasses.dataclass(frozen=True)
class FaithfulKeep:
    """A nested schedule that keeps as little as each snapshot's accuracy allows.

    At its pruning, experience ``t`` of ``N`` tries the keep fractions
    ``share * 1 / (N - t)`` for each of :attr:`shares`, smallest first (``1 / (N - t)``
    is ``"fair"``'s keep: every share is a part of it), and keeps the first whose
    pruned model loses at most :attr:`max_drop` accuracy on the experience's own
    classes against the dense model it is pruned from; when none does, it keeps
    the fair share. What an experience leaves free is left to the later ones, and
    the last experience keeps all that is left, as with ``"fair"``.
    :func:`avalanche_m2kd.keep_search.smallest_faithful_keep` does the measuring. Its
    cost, once per experience: the experience's training mini-batches it measures on
    (:attr:`samples` of them) held on the device, and for the dense model and each
    share tried a copy of the model, a BatchNorm re-estimation pass and an evaluation
    pass over them.

    Args:
        max_drop: the accuracy a snapshot may lose on its own classes, in
            ``[0, 1]`` (default 0.02, ours).
        shares: parts of the fair keep to try, each in ``(0, 1)``, kept sorted
            (default 1/8, 1/4, 1/2, ours).
        samples: measure on the first mini-batches of one pass over the experience's
            training loader (which shuffles: a random subset, new and replayed
            samples as trained), whole mini-batches until at least this many
            samples, an int >= 1 (default 1,024, ours); ``None``: the whole pass.

    Example:
        >>> FaithfulKeep().keeps(0, 4)  # the fair keep is 1/4
        [0.03125, 0.0625, 0.125, 0.25]
        >>> FaithfulKeep().keeps(3, 4)  # the last experience keeps all that is left
        [1.0]
    """

    max_drop: float = 0.02
    shares: tuple[float, ...] = (0.125, 0.25, 0.5)
    samples: int | None = 1024

    def __post_init__(self) -> None:
        drop = self.max_drop
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop <= 1:
            raise ValueError(
                f"Expected argument `max_drop` to be a float in [0, 1], but got {drop!r}"
            )
        shares = tuple(self.shares)
        if not shares or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1
            for v in shares
        ):
            raise ValueError(
                "Expected argument `shares` to be non-empty floats in (0, 1), but got "
                f"{self.shares!r}"
            )
        object.__setattr__(self, "shares", tuple(sorted(float(v) for v in shares)))
        n = self.samples
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(
                f"Expected argument `samples` to be an int >= 1 or None, but got {n!r}"
            )

    def keeps(self, experience: int, n_experiences: int) -> list[float]:
        """The keep fractions experience ``experience`` tries, smallest first; the
        last one (the fair keep) is kept when no smaller one is faithful."""
        fair = keep_fraction("fair", experience, n_experiences)
        if fair >= 1.0:
            return [1.0]
        return [share * fair for share in self.shares] + [fair]

    def plain(self) -> dict[str, object]:
        """As plain values (a checkpoint's configuration, a record)."""
        return {"faithful_keep": {"max_drop": self.max_drop, "shares": list(self.shares),
                                  "samples": self.samples}}


#: ``"fair"``, one float in ``[0, 1)``, one float per experience, or a
#: :class:`FaithfulKeep`.
PruneRatio: TypeAlias = str | float | Sequence[float] | FaithfulKeep

#: The largest owner value an ``uint8`` owner tensor (the unpacked form) can hold.
MAX_SNAPSHOTS = 255


def validate_prune_ratio(prune_ratio: PruneRatio) -> PruneRatio:
    """Check a ``prune_ratio`` argument and return it unchanged.

    Args:
        prune_ratio: ``"fair"``, a float in ``[0, 1)``, a sequence of such floats
            (one per experience) or a :class:`FaithfulKeep`.

    Raises:
        ValueError: for any other value, with the expected form in the message.
    """
    if isinstance(prune_ratio, FaithfulKeep):
        return prune_ratio
    if isinstance(prune_ratio, str):
        if prune_ratio != "fair":
            raise ValueError(
                "Expected argument `prune_ratio` to be 'fair', a float in [0, 1), a "
                f"list of such floats or a FaithfulKeep, but got {prune_ratio!r}"
            )
        return prune_ratio
    values = list(prune_ratio) if isinstance(prune_ratio, Sequence) else [prune_ratio]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(
                "Expected argument `prune_ratio` to be a float in [0, 1) (or 'fair', or a "
                f"list of floats in [0, 1)), but got {v!r}"
            )
    if not values:
        raise ValueError("Expected argument `prune_ratio` to be non-empty, but got []")
    return prune_ratio


def keep_fraction(
    prune_ratio: PruneRatio, experience: int, n_experiences: int | None = None
) -> float:
    """Fraction of the *free* weights that experience ``experience`` keeps.

    * ``"fair"``: ``1 / (N - t)`` for 0-based ``t`` out of ``N`` experiences, so every
      experience ends up owning the same share ``1 / N`` of each layer and the last
      one keeps all that is left.
    * a float ``r``: ``1 - r`` at every experience (experience ``t`` then owns
      ``(1 - r) r^t`` of each layer: a long stream starves its last experiences).
    * a sequence: ``1 - r[t]`` (the last value repeats past the end).
    * a :class:`FaithfulKeep`: the most it keeps, ``"fair"``'s keep (the fraction it
      keeps is measured at the pruning).

    Args:
        prune_ratio: see :func:`validate_prune_ratio`.
        experience: 0-based experience index ``t``.
        n_experiences: stream length ``N``; required by ``"fair"``.

    Example:
        >>> [round(keep_fraction("fair", t, 4), 3) for t in range(4)]
        [0.25, 0.333, 0.5, 1.0]
        >>> keep_fraction(0.25, 3)
        0.75
    """
    if isinstance(prune_ratio, FaithfulKeep):
        prune_ratio = "fair"
    if prune_ratio == "fair":
        if n_experiences is None:
            raise ValueError(
                "prune_ratio='fair' needs the stream length: the experience does not "
                "know its stream, so pass `n_experiences=` or a float `prune_ratio`"
            )
        if experience >= n_experiences:
            raise ValueError(
                f"experience {experience} is past the end of a stream of {n_experiences}"
            )
        return 1.0 / (n_experiences - experience)
    if isinstance(prune_ratio, Sequence) and not isinstance(prune_ratio, str):
        ratio: str | float = prune_ratio[min(experience, len(prune_ratio) - 1)]
    else:
        ratio = prune_ratio
    return 1.0 - float(ratio)


def prune_free_weights(
    weight: Tensor, owner: Tensor, owner_value: int, keep: float
) -> tuple[Tensor, Tensor]:
    """Give the largest-magnitude free weights to a new owner; release the rest.

    Among the entries with ``owner == 0``, the ``round(keep * n_free)`` of largest
    ``|weight|`` get ``owner_value``; the other free entries stay free and are
    reported as *released* (the caller zeroes them). Owned entries are untouched.

    Args:
        weight: the layer's weight tensor.
        owner: ``uint8`` owner indices, same shape as ``weight``.
        owner_value: the new owner (``1 + experience``), in ``1..255``.
        keep: fraction of free weights to keep, in ``[0, 1]``.

    Returns:
        ``(new_owner, released)``: the updated owner tensor and a bool mask of the
        released entries.

    Example:
        >>> w = torch.tensor([0.1, -0.5, 0.3, 0.2])
        >>> o = torch.tensor([0, 0, 1, 0], dtype=torch.uint8)
        >>> new, rel = prune_free_weights(w, o, 2, keep=2 / 3)
        >>> new.tolist(), rel.tolist()
        ([0, 2, 1, 2], [True, False, False, False])
    """
    if weight.shape != owner.shape:
        raise ValueError(f"weight {tuple(weight.shape)} and owner {tuple(owner.shape)} differ")
    if not 1 <= owner_value <= MAX_SNAPSHOTS:
        raise ValueError(f"owner value must be in 1..{MAX_SNAPSHOTS}, got {owner_value}")
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep fraction must be in [0, 1], got {keep}")
    free = (owner == 0).flatten()
    free_idx = free.nonzero().squeeze(1)
    n_keep = int(round(keep * free_idx.numel()))
    new_owner = owner.clone().flatten()
    released = torch.zeros_like(free)
    if free_idx.numel():
        magnitude = weight.detach().flatten()[free_idx].abs()
        order = torch.argsort(magnitude, descending=True, stable=True)
        new_owner[free_idx[order[:n_keep]]] = owner_value
        released[free_idx[order[n_keep:]]] = True
    return new_owner.view_as(owner), released.view_as(owner)


def snapshot_mask(owner: Tensor, owner_value: int) -> Tensor:
    """Bool mask of the weights that make up the snapshot of owner ``owner_value``.

    Those are the weights owned by that snapshot or an earlier one
    (``1 <= owner <= owner_value``); everything else was zero at that time.
    """
    return (owner >= 1) & (owner <= owner_value)


def magnitude_keep_mask(weight: Tensor, density: float) -> Tensor:
    """Bool mask of the ``round(density * numel)`` largest-magnitude entries."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    flat = weight.detach().flatten().abs()
    n_keep = int(round(density * flat.numel()))
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=weight.device)
    if n_keep:
        mask[torch.argsort(flat, descending=True, stable=True)[:n_keep]] = True
    return mask.view_as(weight)


_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(mask: Tensor) -> Tensor:
    """Pack a bool tensor into ``ceil(numel / 8)`` bytes (little-endian bit order).

    The result is a flat ``uint8`` tensor on ``mask``'s device.

    Example:
        >>> pack_bits(torch.tensor([True, False, True])).tolist()
        [5]
    """
    flat = mask.flatten().to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = _BIT_WEIGHTS.to(flat.device)
    return (flat.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: Sequence[int] | torch.Size) -> Tensor:
    """Inverse of :func:`pack_bits`: a bool tensor of ``shape`` on ``packed``'s device.

    Raises:
        ValueError: ``packed`` holds fewer than ``prod(shape)`` bits.
    """
    numel = math.prod(shape)
    if packed.numel() * 8 < numel:
        raise ValueError(
            f"{packed.numel()} packed bytes hold {packed.numel() * 8} bits, fewer than "
            f"the {numel} of shape {tuple(shape)}: the packed tensor belongs to another shape"
        )
    weights = _BIT_WEIGHTS.to(packed.device)
    bits = packed.flatten().unsqueeze(1).bitwise_and(weights).ne(0).flatten()
    return bits[:numel].view(*shape)


def owner_bits(n_snapshots: int) -> int:
    """Bits per weight that hold owner indices ``0..n_snapshots``: ``ceil(log2(n + 1))``.

    Args:
        n_snapshots: the largest owner index to hold, in ``0..MAX_SNAPSHOTS``.

    Returns:
        The width, ``0`` (nothing owned yet: every owner is ``0``) to ``8``.

    Raises:
        ValueError: ``n_snapshots`` is negative or above :data:`MAX_SNAPSHOTS`.

    Example:
        >>> [owner_bits(n) for n in (0, 1, 2, 3, 4, 5, 10, 15, 16, 255)]
        [0, 1, 2, 2, 3, 3, 4, 4, 5, 8]
    """
    if not 0 <= n_snapshots <= MAX_SNAPSHOTS:
        raise ValueError(
            f"Expected a snapshot count in 0..{MAX_SNAPSHOTS}, but got {n_snapshots}: "
            f"the nested store holds at most {MAX_SNAPSHOTS} snapshots"
        )
    return int(n_snapshots).bit_length()


def pack_uints(values: Tensor, bits: int) -> Tensor:
    """Pack integers in ``0..2**bits - 1`` into ``ceil(numel * bits / 8)`` bytes.

    Entry ``i`` (in ``flatten()`` order) occupies bits ``i * bits`` to
    ``(i + 1) * bits - 1`` of the little-endian bit stream, its least significant
    bit first; the last byte is zero-padded. ``bits=0`` (all values zero) takes no
    byte at all. The result is a flat ``uint8`` tensor on ``values``'s device.

    Args:
        values: an integer tensor of any shape.
        bits: the field width, ``0`` to ``8``.

    Returns:
        The packed bytes; :func:`unpack_uints` with the same ``bits`` and the shape
        of ``values`` inverts it.

    Raises:
        ValueError: ``bits`` is outside ``0..8`` or a value does not fit in it.

    Example:
        >>> pack_uints(torch.tensor([1, 2, 3]), 4).tolist()  # 0x21, then 0x03
        [33, 3]
        >>> pack_uints(torch.tensor([5, 0, 7]), 3).tolist()  # 101 000 111, LSB first
        [197, 1]
    """
    if not 0 <= bits <= 8:
        raise ValueError(f"Expected a field width in 0..8 bits, but got {bits}")
    flat = values.detach().flatten()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise ValueError(
            f"values in {int(flat.min())}..{int(flat.max())} do not fit in {bits} bits: "
            f"use at least {max(int(flat.max()), 0).bit_length()} bits (see owner_bits)"
        )
    if bits == 0:
        return torch.zeros(0, dtype=torch.uint8, device=values.device)
    flat = flat.to(torch.uint8)
    if bits == 8:
        return flat.clone()
    shifts = torch.arange(bits, dtype=torch.uint8, device=flat.device)
    return pack_bits(flat.unsqueeze(1).bitwise_right_shift(shifts).bitwise_and(1))


def unpack_uints(packed: Tensor, bits: int, shape: Sequence[int] | torch.Size) -> Tensor:
    """Inverse of :func:`pack_uints`: a ``uint8`` tensor of ``shape``.

    Args:
        packed: bytes from :func:`pack_uints`.
        bits: the width they were packed with.
        shape: the shape of the packed values.

    Returns:
        The values as ``uint8``, on ``packed``'s device.

    Raises:
        ValueError: ``bits`` is outside ``0..8`` or ``packed`` has the wrong size.

    Example:
        >>> unpack_uints(torch.tensor([197, 1], dtype=torch.uint8), 3, (3,)).tolist()
        [5, 0, 7]
    """
    if not 0 <= bits <= 8:
        raise ValueError(f"Expected a field width in 0..8 bits, but got {bits}")
    numel = math.prod(shape)
    expected = (numel * bits + 7) // 8
    if packed.numel() != expected:
        raise ValueError(
            f"Expected {expected} packed bytes for {numel} values of {bits} bits, but got "
            f"{packed.numel()}: the packed tensor belongs to another shape or width"
        )
    if bits == 0:
        return torch.zeros(tuple(shape), dtype=torch.uint8, device=packed.device)
    if bits == 8:
        return packed.view(*shape).clone()
    fields = unpack_bits(packed, (numel, bits)).to(torch.uint8)
    shifts = torch.arange(bits, dtype=torch.uint8, device=packed.device)
    return fields.bitwise_left_shift(shifts).sum(dim=1, dtype=torch.uint8).view(*shape)
