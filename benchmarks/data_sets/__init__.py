"""The data sets of the comparison harness: one module each, registered by name.

Each module holds one :class:`~benchmarks.data_sets.base.DataSet` subclass (its
classes, image shape, streams and, if its files need it, how to unpack them) and
registers one instance. :data:`MODULES` is the registry; adding a data set is one
file here and its name in that tuple (:doc:`/benchmarks/extending`).

Example:
    >>> DATA_SETS["fmnist"].image_bytes
    784
"""

from __future__ import annotations

import importlib

from benchmarks.data_sets.base import DATA_SETS, DataSet, register

#: The registry: the data set modules, each registering its data set.
MODULES = ("fmnist",)

for _module in MODULES:
    importlib.import_module(f"benchmarks.data_sets.{_module}")
del _module

__all__ = ["DATA_SETS", "MODULES", "DataSet", "register"]
