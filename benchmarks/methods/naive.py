"""Fine-tuning: Avalanche's ``Naive``, the floor every other method must beat."""

from __future__ import annotations

from typing import Any

from avalanche.training import Naive as _Naive
from torch import nn

from benchmarks.methods.base import Method, Setting, register

__all__ = ["NaiveMethod"]


class NaiveMethod(Method):
    """Avalanche's ``Naive``: fine-tuning, nothing stored."""

    exemplars = "never"

    def build(  # noqa: D102
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> Any:
        model = setting.model()
        return _Naive(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=nn.CrossEntropyLoss(),
            **setting.template_args(),
        )


register(NaiveMethod("naive"))
