"""Experience replay: Avalanche's ``Naive`` with ``ReplayPlugin`` over the shared memory."""

from __future__ import annotations

from typing import Any

from avalanche.training import Naive as _Naive

from benchmarks.methods.base import (
    Method,
    Setting,
    criterion,
    register,
    replay_exemplars,
    replay_plugins,
)

__all__ = ["ReplayMethod"]


class ReplayMethod(Method):
    """Avalanche's ``Naive`` with ``ReplayPlugin`` over the shared herding memory.

    Args:
        logit_adjusted: M2KD's :class:`~avalanche_m2kd.LogitAdjustedCrossEntropy` as
            criterion instead of cross-entropy: ``True`` with Menon et al.'s ``tau = 1``,
            a float for another ``tau``.
    """

    exemplars = "required"

    def __init__(self, name: str, logit_adjusted: bool | float = False) -> None:  # noqa: D107
        super().__init__(name, logit_adjusted=logit_adjusted)

    def build(  # noqa: D102
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> Any:
        p, model = self.params(options), setting.model()
        return _Naive(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=criterion(p["logit_adjusted"]),
            plugins=replay_plugins(n_exemplars),
            **setting.template_args(),
        )

    def stored_bytes(self, strategy: Any, setting: Setting) -> dict[str, int]:  # noqa: D102
        return self._counts(exemplars=replay_exemplars(strategy) * setting.image_bytes)


register(ReplayMethod("replay"))
register(ReplayMethod("replay-la", logit_adjusted=True))
# M2KD's default strength, to check that the peer is not disadvantaged by its tau = 1
register(ReplayMethod("replay-la-0.75", logit_adjusted=0.75))
