"""The random number generators' state of a process, in a form a checkpoint holds.

Python's ``random``, NumPy's global generator and torch's (CPU, and every CUDA device
once CUDA is initialised), as tensors and plain values that
``torch.load(weights_only=True)`` reads back. :mod:`avalanche_m2kd.checkpoint` saves it
so that a resumed run draws the same numbers as one never interrupted.

Example:
    >>> import random
    >>> state = rng_state()
    >>> first = (random.random(), float(torch.rand(1)))
    >>> set_rng_state(state)
    >>> (random.random(), float(torch.rand(1))) == first
    True
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

__all__ = ["preserved_rng", "rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """The state of every generator: ``python``, ``numpy``, ``torch`` and (when CUDA is
    initialised) ``cuda``, one entry per device."""
    legacy = np.random.get_state()  # (name, keys, pos, has_gauss, gauss)
    assert isinstance(legacy, tuple)
    name, keys, pos, has_gauss, gauss = legacy
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` (its tensors may be on any device; CUDA's only where
    CUDA is available)."""
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block whose random draws (e.g. a shuffling loader's) leave every generator
    as it was before the block, also when the block raises.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> with preserved_rng():
        ...     _ = torch.rand(3)
        >>> after = float(torch.rand(1))
        >>> _ = torch.manual_seed(0)
        >>> after == float(torch.rand(1))
        True
    """
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def _tuples(value: Any) -> Any:
    """``random.setstate`` wants the nested tuples ``getstate`` gave (saved as lists)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
