"""The checkpoint file: written atomically, read with ``weights_only=True``.

A write goes to a temporary file next to the checkpoint, is flushed to disk and renamed
over it, so the path always holds a complete checkpoint; temporaries left by a write that
was killed are removed at the next one. Used by :mod:`avalanche_m2kd.checkpoint`.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["read_state", "write_atomically"]


def write_atomically(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` so that ``path`` is never half-written.

    Args:
        state: the checkpoint's entries.
        path: the checkpoint file; its folder must exist.
    """
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a write that was killed
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the checkpoint private
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_state(path: str | os.PathLike, map_location: str | torch.device) -> Any:
    """What ``torch.load(weights_only=True)`` reads from ``path``, its tensors on ``map_location``.

    Raises:
        ValueError: the file cannot be read (corrupt, truncated, or not written by ``torch.save``).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"{os.fspath(path)!r} is not a readable checkpoint: {err}") from err
