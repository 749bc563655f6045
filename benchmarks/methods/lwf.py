"""Learning without Forgetting: Avalanche's ``LwF``, one previous model as teacher."""

from __future__ import annotations

from typing import Any

from avalanche.training import LwF as _LwF
from avalanche.training.plugins import LwFPlugin

from benchmarks.methods.base import (
    Method,
    Setting,
    criterion,
    find_plugin,
    model_bytes,
    register,
    replay_exemplars,
    replay_plugins,
)

__all__ = ["LwFMethod"]


class LwFMethod(Method):
    """Avalanche's ``LwF`` (plus the shared replay memory when it has exemplars).

    Avalanche's LwF loss has no T² factor: ``alpha = T²`` gives it M2KD's scale.
    It keeps one previous model (the final one at the end).

    Args:
        logit_adjusted: as :class:`ReplayMethod`.
    """

    def __init__(self, name: str, logit_adjusted: bool = False) -> None:  # noqa: D107
        super().__init__(name, logit_adjusted=logit_adjusted)

    def build(  # noqa: D102
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> Any:
        p, model = self.params(options), setting.model()
        t = setting.temperature
        return _LwF(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=criterion(p["logit_adjusted"]),
            alpha=t**2,
            temperature=t,
            plugins=replay_plugins(n_exemplars),
            **setting.template_args(),
        )

    def stored_bytes(self, strategy: Any, setting: Setting) -> dict[str, int]:  # noqa: D102
        previous = find_plugin(strategy, LwFPlugin).lwf.prev_model
        return self._counts(exemplars=replay_exemplars(strategy) * setting.image_bytes,
                            models=model_bytes(previous))

    def fixed_bytes(  # noqa: D102
        self, setting: Setting, options: dict[str, Any] | None = None
    ) -> int:
        return model_bytes(setting.model("final"))


register(LwFMethod("lwf"))
register(LwFMethod("lwf-la", logit_adjusted=True))
