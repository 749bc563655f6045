"""Each sample's teacher outputs, kept for the experience: a teacher whose output depends
on the sample alone runs once per sample, not once per epoch.

A snapshot never changes once recorded, and with its BatchNorm layers on their stored
statistics (``teacher_bn="running"``) a teacher's logits and features on a sample depend
on that sample only, not on the mini-batch around it. :class:`SampleOutputCache` keys
each sample by its bytes (a 128-bit BLAKE2b digest of its dtype, shape and values), keeps
each teacher's rows for the samples it has seen, and runs the teacher only on the
samples it has not: without augmentation, every epoch after the first finds every
sample. An augmented view is another sample (its bytes differ), so augmentation makes
misses, never wrong outputs. With batch statistics (``teacher_bn="batch"``) a sample's
output depends on its mini-batch, so nothing can be reused: the store does not use the
cache then.

The rows of a teacher run on part of a mini-batch equal those of a run on all of it to
float rounding (a convolution's kernels may sum in another order for another batch
size); they are bit-equal to the first run that computed them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable

import torch
from torch import Tensor

from avalanche_m2kd.options import check_bool, check_int

__all__ = ["SampleOutputCache", "sample_keys"]

#: What a teacher gives for a mini-batch: its logits and its captured features by spec.
Outputs = tuple[Tensor, dict[str, Tensor]]

#: Default bound on the bytes of kept rows (256 MiB).
DEFAULT_MAX_BYTES = 256 * 2**20


def sample_keys(x: Tensor) -> list[bytes]:
    """A key per sample (row) of ``x``: equal keys for bit-equal samples of one dtype and
    shape, a 16-byte BLAKE2b digest of those bytes.

    Example:
        >>> x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0]])
        >>> a, b, c = sample_keys(x)
        >>> a == b, a == c, len(a)
        (True, False, 16)
        >>> sample_keys(x.double())[0] == a  # another dtype: another sample
        False
    """
    rows = x.detach().reshape(x.shape[0], -1).contiguous().cpu().view(torch.uint8).numpy()
    head = f"{x.dtype}{tuple(x.shape[1:])}".encode()
    return [hashlib.blake2b(head + row.tobytes(), digest_size=16).digest() for row in rows]


def _row_nbytes(logits: Tensor, features: dict[str, Tensor]) -> int:
    return logits.element_size() * logits[0].numel() + sum(
        t.element_size() * t[0].numel() for t in features.values()
    )


class SampleOutputCache:
    """Teachers' outputs by sample, bounded in bytes.

    Args:
        max_bytes: the most bytes of kept rows (logits and features) over all teachers,
            an int >= 0 (default 256 MiB). Past it, new rows are computed and used but
            not kept; the rows kept stay usable.

    Attributes:
        hits: samples found, since the last :meth:`clear`.
        misses: samples run through the teacher, since the last :meth:`clear`.
        enabled: whether rows are kept and looked up (default ``True``); with
            ``False``, :meth:`run` is ``forward(x)``. Setting it to ``False`` frees
            the rows kept.

    Example:
        >>> cache = SampleOutputCache()
        >>> calls = []
        >>> def teacher(x):
        ...     calls.append(len(x))
        ...     return 2 * x, {"f": x + 1}
        >>> x = torch.tensor([[1.0], [2.0]])
        >>> logits, feats = cache.run("teacher 0", x, teacher)
        >>> logits, feats = cache.run("teacher 0", torch.tensor([[2.0], [3.0]]), teacher)
        >>> logits.flatten().tolist(), feats["f"].flatten().tolist(), calls
        ([4.0, 6.0], [3.0, 4.0], [2, 1])
        >>> cache.hits, cache.misses
        (1, 3)
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = check_int(max_bytes, "max_bytes")
        self._rows: dict[Hashable, dict[bytes, tuple[Tensor, dict[str, Tensor]]]] = {}
        self._nbytes = 0
        self.hits = self.misses = 0
        self._enabled = True
        self._last: tuple[Tensor, int, list[bytes]] | None = None  # keys of the last input

    @property
    def enabled(self) -> bool:
        """Whether rows are kept and looked up (see the class). Raises a ``ValueError``
        when set to something other than a bool."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = check_bool(value, "enabled")
        if not value:
            self.clear()

    def nbytes(self) -> int:
        """Bytes of the rows kept now."""
        return self._nbytes

    def clear(self) -> None:
        """Forget every row (the teachers changed) and reset the counts."""
        self._rows.clear()
        self._nbytes = 0
        self.hits = self.misses = 0
        self._last = None

    def run(self, teacher: Hashable, x: Tensor, forward: Callable[[Tensor], Outputs]) -> Outputs:
        """``forward(x)``'s logits and features, ``forward`` run only on the samples of
        ``x`` not yet seen under the key ``teacher`` (none: it is not called).

        ``forward`` must give, for each sample, an output that depends on that sample
        only (a teacher in eval mode), with the same feature specs on every call.
        """
        if not self._enabled:
            return forward(x)
        last = self._last  # several teachers on one mini-batch: its keys are made once
        if last is not None and last[0] is x and last[1] == x._version:
            keys = last[2]
        else:
            keys = sample_keys(x)
            self._last = (x, x._version, keys)
        table = self._rows.setdefault(teacher, {})
        missing = [i for i, key in enumerate(keys) if key not in table]
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if len(missing) == len(keys):  # nothing kept: the teacher sees the batch as it is
            logits, features = forward(x)
            self._keep(table, keys, range(len(keys)), logits, features)
            return logits, features
        fresh: dict[bytes, tuple[Tensor, dict[str, Tensor]]] = {}
        if missing:
            index = torch.tensor(missing, device=x.device)
            logits, features = forward(x.index_select(0, index))
            fresh = self._keep(
                table, [keys[i] for i in missing], range(len(missing)), logits, features
            )
        rows = [table.get(key) or fresh[key] for key in keys]
        logits = torch.stack([r[0] for r in rows])
        specs = rows[0][1].keys()
        return logits, {s: torch.stack([r[1][s] for r in rows]) for s in specs}

    def _keep(
        self,
        table: dict,
        keys: list[bytes],
        positions: range,
        logits: Tensor,
        features: dict[str, Tensor],
    ) -> dict[bytes, tuple[Tensor, dict[str, Tensor]]]:
        """The rows of ``logits``/``features`` by key; kept in ``table`` while the bound
        allows (each row its own copy, so a kept row holds no batch alive)."""
        logits, features = logits.detach(), {s: t.detach() for s, t in features.items()}
        size = _row_nbytes(logits, features) if len(keys) else 0
        rows = {}
        for key, i in zip(keys, positions, strict=True):
            row = (logits[i], {s: t[i] for s, t in features.items()})
            if key not in table and self._nbytes + size <= self.max_bytes:
                row = (row[0].clone(), {s: t.clone() for s, t in row[1].items()})
                table[key] = row
                self._nbytes += size
            rows[key] = row
        return rows
