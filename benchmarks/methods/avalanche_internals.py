"""Every name Avalanche 0.6.0 keeps private that the harness's methods rely on, in one
place: ``tests/benchmarks/test_methods.py`` pins each, so an Avalanche upgrade that
moves one breaks here, loudly.

* iCaRL's exemplar plugin ``avalanche.training.supervised.icarl._ICaRLPlugin`` (its
  ``x_memory`` and ``class_means``) and ``ICaRLLossPlugin.old_model``
  (:func:`icarl_plugins`);
* the module-level ``MultiStepLR`` of ``avalanche.training.plugins.bic``, which
  ``BiCPlugin.bias_correction_step`` calls with ``verbose=`` (torch 2.14 refuses it:
  :func:`bic_scheduler_without_verbose`), and ``BiCPlugin.cross_entropy``,
  ``val_buffer``, ``model_old`` and ``bias_layer`` (:data:`BiCPluginBase`);
* DER's ``storage_policy.buffer`` and its ``logits`` (:func:`der_memory`).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from avalanche.training.plugins import bic as bic_module

from benchmarks.methods.base import find_plugin

__all__ = [
    "BiCPluginBase",
    "MultiStepLRWithoutVerbose",
    "bic_module",
    "bic_scheduler_without_verbose",
    "der_memory",
    "icarl_plugins",
]

#: Avalanche's ``BiCPlugin``, the base the harness's BiC repairs.
BiCPluginBase = bic_module.BiCPlugin


def icarl_plugins(strategy: Any) -> tuple[Any, Any]:
    """iCaRL's exemplar plugin (``_ICaRLPlugin``) and loss plugin (``ICaRLLossPlugin``)."""
    from avalanche.training.losses import ICaRLLossPlugin
    from avalanche.training.supervised.icarl import _ICaRLPlugin

    return find_plugin(strategy, _ICaRLPlugin), find_plugin(strategy, ICaRLLossPlugin)


def der_memory(strategy: Any) -> tuple[Any, list[torch.Tensor]]:
    """DER's exemplar buffer and the logits it stores with each exemplar."""
    buffer = strategy.storage_policy.buffer
    return buffer, buffer.logits


class MultiStepLRWithoutVerbose(torch.optim.lr_scheduler.MultiStepLR):
    """``MultiStepLR`` that drops the ``verbose`` argument torch 2.14 no longer takes."""

    def __init__(self, *args: Any, verbose: Any = None, **kwargs: Any) -> None:  # noqa: D107
        super().__init__(*args, **kwargs)


@contextlib.contextmanager
def bic_scheduler_without_verbose() -> Iterator[None]:
    """While inside, Avalanche's BiC module builds its scheduler without ``verbose``
    (only where torch's ``MultiStepLR`` rejects it); restored on exit."""
    original = bic_module.MultiStepLR
    if "verbose" in inspect.signature(original.__init__).parameters:
        yield
        return
    bic_module.MultiStepLR = MultiStepLRWithoutVerbose
    try:
        yield
    finally:
        bic_module.MultiStepLR = original
