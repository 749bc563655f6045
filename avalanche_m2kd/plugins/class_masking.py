"""Keep units of classes not yet seen out of every loss and prediction."""

from __future__ import annotations

from typing import Any

import torch
from avalanche.training.plugins import SupervisedPlugin

from avalanche_m2kd.stream import experience_classes

__all__ = ["SeenClassesMaskingPlugin"]


# Avalanche types no `__init_subclass__` keyword: mypy does not know `supports_distributed`.
class SeenClassesMaskingPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """Masks the logits of classes not seen so far with ``mask_value``.

    A plain ``nn.Linear`` head sized for all classes otherwise lets unseen units
    into the cross-entropy (they are pushed down at every step) and into the
    predictions. This does for any head what Avalanche's ``IncrementalClassifier``
    does with ``masking=True`` (same default value), in training and evaluation.

    Args:
        mask_value: the logit given to unseen units (Avalanche's default ``-1000``).
    """

    def __init__(self, mask_value: float = -1000.0) -> None:
        super().__init__()
        self.mask_value = mask_value
        self.seen: set[int] = set()
        self._mask: torch.Tensor | None = None

    def state_dict(self) -> dict[str, list[int]]:
        """The classes seen so far (for checkpoints)."""
        return {"seen": sorted(self.seen)}

    def load_state_dict(self, state: dict[str, list[int]]) -> None:
        """Restore :meth:`state_dict`."""
        self.seen = set(int(c) for c in state["seen"])
        self._mask = None

    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.seen.update(experience_classes(strategy.experience))
        self._mask = None

    def _apply(self, strategy: Any) -> None:
        out = strategy.mb_output
        if not self.seen or not isinstance(out, torch.Tensor) or out.dim() != 2:
            return
        mask = self._mask
        if mask is None or mask.shape[0] != out.shape[1] or mask.device != out.device:
            mask = torch.ones(out.shape[1], dtype=torch.bool, device=out.device)
            mask[[c for c in self.seen if c < out.shape[1]]] = False
            self._mask = mask
        strategy.mb_output = out.masked_fill(mask, self.mask_value)

    def after_forward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self._apply(strategy)

    def after_eval_forward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self._apply(strategy)
