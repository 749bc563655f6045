"""iCaRL: Avalanche's ``ICaRL``, its own herding memory and nearest-mean classifier."""

from __future__ import annotations

import math
from typing import Any

from avalanche.training import ICaRL as _ICaRL
from torch import nn

from benchmarks.methods.avalanche_internals import icarl_plugins
from benchmarks.methods.base import Method, Setting, model_bytes, register, tensor_bytes

__all__ = ["ICaRLMethod"]


class ICaRLMethod(Method):
    """Avalanche's ``ICaRL`` with a fixed head and its own herding memory
    (``fixed_memory=True``: ``ceil(memory / seen classes)`` exemplars per class).

    It keeps one previous model (whose nearest-mean classifier holds the class
    means) and the class means again in its exemplar plugin.
    """

    exemplars = "required"

    def build(  # noqa: D102
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> Any:
        net = setting.model("fixed")
        return _ICaRL(
            feature_extractor=net.feature_extractor,
            classifier=net.classifier,
            optimizer=setting.optimizer(net),
            memory_size=n_exemplars,
            buffer_transform=None,
            fixed_memory=True,
            **setting.template_args(),
        )

    def stored_bytes(self, strategy: Any, setting: Setting) -> dict[str, int]:  # noqa: D102
        memory, loss = icarl_plugins(strategy)
        return self._counts(
            exemplars=sum(len(x) for x in memory.x_memory) * setting.image_bytes,
            models=model_bytes(loss.old_model),
            other=tensor_bytes(memory.class_means.values()),
        )

    def fixed_bytes(  # noqa: D102
        self, setting: Setting, options: dict[str, Any] | None = None
    ) -> int:
        net = setting.model("fixed")
        head = net.classifier
        assert isinstance(head, nn.Linear)  # a fixed head (make_backbone's incremental_head=False)
        means = setting.n_classes * head.in_features * 4  # fp32 mean of every class
        # the old model's classifier holds them, so does the plugin
        return model_bytes(net) + 2 * means

    def exemplar_bytes(  # noqa: D102
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> int:
        held = max((k * math.ceil(n_exemplars / k) for k in setting.seen_counts), default=0)
        return held * setting.image_bytes


register(ICaRLMethod("icarl"))
