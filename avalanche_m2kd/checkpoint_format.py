"""The checkpoint's format and versions: what a file must name to be read, and the errors.

Every checkpoint names its format, ``"avalanche_m2kd.checkpoint/<version>"``; one of
another version is refused by :func:`check_format` before anything is restored, naming
the version found and the one read. Entries older writers of the same version wrote
differently are read here too (:func:`read_config`). Used by
:mod:`avalanche_m2kd.checkpoint`, which re-exports :data:`FORMAT_VERSION` and the two
errors.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "check_format",
    "read_config",
]

FORMAT_VERSION = 1
"""The version of the layout :func:`~avalanche_m2kd.checkpoint.save_checkpoint` writes,
and the only one :func:`~avalanche_m2kd.checkpoint.load_checkpoint` reads. Raised
whenever a saved entry changes meaning or a required one is added; version 1 is every
checkpoint written since 0.1.0."""
_FORMAT_NAME = "avalanche_m2kd.checkpoint"
FORMAT = f"{_FORMAT_NAME}/{FORMAT_VERSION}"
"""The ``"format"`` entry of every checkpoint written today."""


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by another configuration, model or stream."""


class CheckpointFormatError(ValueError):
    """The file is an avalanche-m2kd checkpoint of a format version this one cannot read."""


def check_format(state: Any, path: str | os.PathLike) -> None:
    """Refuse anything but a checkpoint of :data:`FORMAT_VERSION`, naming what it is.

    Args:
        state: what ``torch.load`` read from ``path``.
        path: the file, for the message.

    Raises:
        CheckpointFormatError: an avalanche-m2kd checkpoint of another format version.
        ValueError: not an avalanche-m2kd checkpoint.
    """
    found = state.get("format") if isinstance(state, dict) else None
    name, _, version = found.partition("/") if isinstance(found, str) else ("", "", "")
    if name != _FORMAT_NAME:
        what = repr(found) if isinstance(state, dict) else f"a {type(state).__name__}"
        raise ValueError(
            f"{os.fspath(path)!r} is not an avalanche-m2kd checkpoint of format {FORMAT} "
            f"(found {what}): write it with avalanche_m2kd.checkpoint.save_checkpoint"
        )
    if version != str(FORMAT_VERSION):
        newer = version.isdigit() and int(version) > FORMAT_VERSION
        advice = (
            "it was written by a newer avalanche-m2kd: resume with that version"
            if newer
            else "resume with the avalanche-m2kd that wrote it, or start the run again"
        )
        raise CheckpointFormatError(
            f"{os.fspath(path)!r} is an avalanche-m2kd checkpoint of format version {version!r}, "
            f"but this avalanche-m2kd reads format version {FORMAT_VERSION} only: {advice}"
        )


def read_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A saved ``m2kd_config`` as today's code reads it.

    avalanche-m2kd 0.1 held ``prune_ratio=None`` for its default (``"fair"`` with nested
    storage, else 0.5); later ones hold the value that ran. Before 0.3 every BatchNorm
    re-estimation and keep search used the whole pass over the loader: a config
    without ``recalibrate_samples`` (or a ``faithful_keep`` without ``samples``) ran
    with ``None``.

    Example:
        >>> config = read_config({"prune_ratio": {"faithful_keep": {"max_drop": 0.02}}})
        >>> config["prune_ratio"], config["recalibrate_samples"]
        ({'faithful_keep': {'max_drop': 0.02, 'samples': None}}, None)
    """
    if not config:
        return config
    config = dict(config)
    if "prune_ratio" in config:
        config.setdefault("recalibrate_samples", None)
        ratio = config["prune_ratio"]
        if ratio is None:
            nested = config.get("snapshot_mode") == "nested"
            config["prune_ratio"] = "fair" if nested else 0.5
        elif isinstance(ratio, dict) and "faithful_keep" in ratio:
            config["prune_ratio"] = {"faithful_keep": {**ratio["faithful_keep"]}}
            config["prune_ratio"]["faithful_keep"].setdefault("samples", None)
    return config
