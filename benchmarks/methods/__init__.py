"""The methods of the comparison harness: one module each, registered by name.

Each module holds one :class:`~benchmarks.methods.base.Method` subclass (how it builds
its Avalanche strategy, what it stores, what a total memory buys it) and the
:func:`~benchmarks.methods.base.register` calls of its named variants. The tuple
:data:`MODULES` is the registry: the order of its modules is the order of the tables.
Adding a method is one file here and its name in that tuple
(:doc:`/benchmarks/extending`).

Every name Avalanche 0.6.0 keeps private that a method relies on is used in
:mod:`benchmarks.methods.avalanche_internals` only; ``tests/benchmarks/test_methods.py``
pins them.

Example:
    >>> setting = Setting(n_classes=10, experience_classes=((0, 1), (2, 3)))
    >>> METHODS["er-ace"].exemplars_for(10 * 784, setting)
    10
    >>> METHODS["der"].exemplar_bytes(10, setting)  # image + 10 fp32 logits each
    8240
"""

from __future__ import annotations

import importlib

from benchmarks.methods.base import (
    BYTE_KINDS,
    METHODS,
    Method,
    Setting,
    model_bytes,
    register,
    seed_everything,
)

#: The registry: the method modules, imported (each registering its methods) in the
#: order of the tables. A new method is a module here and its name in this tuple.
MODULES = ("naive", "replay", "lwf", "icarl", "er_ace", "der", "bic", "m2kd")

for _module in MODULES:
    importlib.import_module(f"benchmarks.methods.{_module}")
del _module

__all__ = ["BYTE_KINDS", "METHODS", "MODULES", "Method", "Setting", "model_bytes", "register",
           "seed_everything"]
