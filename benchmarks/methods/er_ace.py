"""ER-ACE (Caccia et al., ICLR 2022): Avalanche's ``ER_ACE``, its own class-balanced memory."""

from __future__ import annotations

from typing import Any

from avalanche.training import ER_ACE as _ER_ACE
from torch import nn

from benchmarks.methods.base import Method, Setting, register

__all__ = ["ERACEMethod"]


class ERACEMethod(Method):
    """Avalanche's ``ER_ACE`` (Caccia et al., ICLR 2022), its own class-balanced memory
    (random within class, updated before each experience).

    ``batch_size_mem``: ``None`` is the shared mini-batch (as many replayed images
    as new ones; Avalanche's default is 10, for its online setting).
    """

    exemplars = "required"

    def __init__(self, name: str, batch_size_mem: int | None = None) -> None:  # noqa: D107
        super().__init__(name, batch_size_mem=batch_size_mem)

    def build(  # noqa: D102
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> Any:
        p, model = self.params(options), setting.model()
        return _ER_ACE(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=nn.CrossEntropyLoss(),
            mem_size=n_exemplars,
            batch_size_mem=p["batch_size_mem"] or setting.batch_size,
            **setting.template_args(),
        )

    def stored_bytes(self, strategy: Any, setting: Setting) -> dict[str, int]:  # noqa: D102
        return self._counts(exemplars=len(strategy.storage_policy.buffer) * setting.image_bytes)


register(ERACEMethod("er-ace"))
