"""What the harness needs of a data set: :class:`DataSet`, and the registry
(:data:`DATA_SETS`, :func:`register`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

from benchmarks import registry

__all__ = ["DATA_SETS", "DataSet", "register"]


class DataSet:
    """One data set of the harness: its classes, its image shape and its streams.

    Subclasses set :attr:`name`, :attr:`n_classes` and :attr:`image_shape` and
    implement :meth:`benchmark`; a data set whose files must be unpacked first also
    implements :meth:`prepare` (``python -m benchmarks.compare prepare``) and names the
    exception :meth:`benchmark` raises when they are missing (:attr:`missing_error`),
    which the command line turns into an error message that says what to run.
    """

    #: The registry name (``--data-set``; records say it).
    name: ClassVar[str]
    #: Classes of the whole stream.
    n_classes: ClassVar[int]
    #: One input's shape (uint8 values: its product is an exemplar's bytes).
    image_shape: ClassVar[tuple[int, ...]]
    #: What :meth:`benchmark` raises when the files are missing.
    missing_error: ClassVar[type[Exception]] = FileNotFoundError

    @property
    def image_bytes(self) -> int:
        """Bytes of one stored image, one byte per value."""
        return math.prod(self.image_shape)

    def benchmark(self, stream: str, *, root: str | Path, class_order: list[int],
                  train_per_class: int | None, test_per_class: int | None) -> Any:
        """The Avalanche class-incremental benchmark of ``stream`` (``"5x2"``, ``"2+1"``,
        ``"5+1"``) over ``class_order``, keeping the first ``train_per_class`` /
        ``test_per_class`` images of each class (``None``: all)."""
        raise NotImplementedError

    def prepare(self, root: str | Path, source: str | Path | None = None) -> Path:
        """Unpack the data set under ``root`` (from ``source``); return where it lies."""
        raise NotImplementedError(f"{self.name} needs no preparation")


#: Every data set, by name.
DATA_SETS: dict[str, DataSet] = {}


def register(data_set: DataSet) -> DataSet:
    """Add ``data_set`` to :data:`DATA_SETS` under its name.

    Raises:
        ValueError: the name is taken.
    """
    return registry.add(DATA_SETS, data_set, "data set")
