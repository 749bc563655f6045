"""DER / DER++ (Buzzega et al., NeurIPS 2020): Avalanche's ``DER``, exemplars with their logits."""

from __future__ import annotations

from typing import Any

from avalanche.training import DER as _DER
from torch import nn

from avalanche_m2kd.plugins import SeenClassesMaskingPlugin
from benchmarks.methods.avalanche_internals import der_memory
from benchmarks.methods.base import Method, Setting, register, tensor_bytes

__all__ = ["DERMethod", "PredictSeenClasses"]


class PredictSeenClasses(SeenClassesMaskingPlugin):
    """Units of unseen classes masked in evaluation only (DER's ``mask_unseen="eval"``):
    the whole fixed head trains, as in DER's paper."""

    def after_forward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        return None


class DERMethod(Method):
    """Avalanche's ``DER`` (DER++ with ``beta > 0``; Buzzega et al., NeurIPS 2020).

    DER stores each exemplar's logits of the head's size at storage time, so it
    gets a fixed ``nn.Linear`` head over all classes (with a growing
    ``IncrementalClassifier`` the stored and current logits differ in size; with one
    sized for all classes from the start, the stored logits of units not yet active
    are its mask value, -1000, and the logit MSE wrecks those units once their
    classes arrive).

    Args:
        alpha, beta: the logit-MSE and replay cross-entropy weights; default 0.2
            and 1.0, the paper's for Seq-MNIST with 200 exemplars (its code's
            ``best_args``, the benchmark nearest to ours). Avalanche's defaults,
            0.1 and 0.5, are the paper's for Seq-CIFAR-10.
        batch_size_mem: replayed images per step; ``None``: the shared mini-batch
            (Avalanche's default too).
        mask_unseen: ``"always"`` (default): units of classes not seen yet are
            masked in the losses and the predictions
            (:class:`~avalanche_m2kd.plugins.SeenClassesMaskingPlugin`), which is
            what the ``IncrementalClassifier`` of every other method does; the
            logits DER stores come from the model's own forward, unmasked.
            ``"eval"``: in the predictions only (the paper's training, whole head in
            every loss); ``"none"``: never.
    """

    exemplars = "required"
    _MASKS = ("always", "eval", "none")

    def __init__(  # noqa: D107
        self,
        name: str,
        alpha: float = 0.2,
        beta: float = 1.0,
        batch_size_mem: int | None = None,
        mask_unseen: str = "always",
    ) -> None:
        super().__init__(
            name, alpha=alpha, beta=beta, batch_size_mem=batch_size_mem, mask_unseen=mask_unseen
        )

    def build(  # noqa: D102
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> Any:
        p, model = self.params(options), setting.model("fixed")
        if p["mask_unseen"] not in self._MASKS:
            raise ValueError(
                f"Expected `mask_unseen` to be one of {self._MASKS}, but got {p['mask_unseen']!r}"
            )
        plugins = {
            "always": [SeenClassesMaskingPlugin()],
            "eval": [PredictSeenClasses()],
            "none": [],
        }
        return _DER(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=nn.CrossEntropyLoss(),
            mem_size=n_exemplars,
            batch_size_mem=p["batch_size_mem"] or setting.batch_size,
            alpha=p["alpha"],
            beta=p["beta"],
            plugins=plugins[p["mask_unseen"]],
            **setting.template_args(),
        )

    def stored_bytes(self, strategy: Any, setting: Setting) -> dict[str, int]:  # noqa: D102
        buffer, logits = der_memory(strategy)
        return self._counts(exemplars=len(buffer) * setting.image_bytes,
                            logits=tensor_bytes(logits))

    def exemplar_bytes(  # noqa: D102
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> int:
        # fp32 logits of the fixed head
        return n_exemplars * (setting.image_bytes + 4 * setting.n_classes)


register(DERMethod("der"))
# the paper's training: the whole fixed head in every loss, unseen units masked in the
# predictions only (the Peers page compares it with "der")
register(DERMethod("der-eval-mask", mask_unseen="eval"))
