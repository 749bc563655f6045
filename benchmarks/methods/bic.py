"""BiC (Wu et al., CVPR 2019): Avalanche's ``BiCPlugin``, repaired, over the shared memory."""

from __future__ import annotations

import math
from typing import Any

import torch
from avalanche.benchmarks.utils import concat_datasets
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from benchmarks.methods.avalanche_internals import BiCPluginBase, bic_scheduler_without_verbose
from benchmarks.methods.base import (
    Method,
    Setting,
    find_plugin,
    herding_buffer,
    model_bytes,
    register,
)

__all__ = ["BiCMethod", "RepairedBiCPlugin"]


class RepairedBiCPlugin(BiCPluginBase):
    """Avalanche 0.6.0's ``BiCPlugin`` with two repairs.

    * Its bias-correction step runs with
      :func:`~benchmarks.methods.avalanche_internals.bic_scheduler_without_verbose`
      (it passes ``verbose=`` to ``MultiStepLR``, which torch 2.14 refuses with a
      ``TypeError``).
    * ``distillation="paper"`` (default): the distillation targets are the old
      model's softmax over the classes at temperature ``T``, as in BiC's paper and
      code (``tf.nn.softmax(dis_logits / T)``, last axis). Avalanche 0.6.0 takes the
      softmax over ``dim=0``, the mini-batch, at a fixed ``/ 2``; ``"avalanche"``
      keeps that.

    And one choice: ``sampling="replay"`` (default) keeps Avalanche's loader, half of
    each mini-batch from the new data and half from the memory (the harness's shared
    setting); ``"union"`` draws mini-batches of twice the size uniformly from the new
    data and the memory together, as BiC's paper trains.

    Args:
        distillation: ``"paper"`` or ``"avalanche"``.
        sampling: ``"replay"`` or ``"union"``.
        *args, **kwargs: ``BiCPlugin``'s.
    """

    def __init__(  # noqa: D107
        self, *args: Any, distillation: str = "paper", sampling: str = "replay", **kwargs: Any
    ) -> None:
        if distillation not in ("paper", "avalanche"):
            raise ValueError(
                f"Expected `distillation` to be 'paper' or 'avalanche', but got {distillation!r}"
            )
        if sampling not in ("replay", "union"):
            raise ValueError(
                f"Expected `sampling` to be 'replay' or 'union', but got {sampling!r}"
            )
        super().__init__(*args, **kwargs)
        self.distillation = distillation
        self.sampling = sampling

    def before_training_exp(  # noqa: D102
        self, strategy: Any, num_workers: int = 0, shuffle: bool = True, **kwargs: Any
    ) -> None:
        super().before_training_exp(strategy, num_workers=num_workers, shuffle=shuffle, **kwargs)
        if self.sampling == "union" and len(self.storage_policy.buffer) > 0:
            union = concat_datasets([strategy.adapted_dataset, self.storage_policy.buffer])
            strategy.dataloader = torch.utils.data.DataLoader(
                union, batch_size=2 * strategy.train_mb_size, shuffle=shuffle,
                num_workers=num_workers, collate_fn=getattr(union, "collate_fn", None),
            )

    def bias_correction_step(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        with bic_scheduler_without_verbose():
            return super().bias_correction_step(*args, **kwargs)

    def cross_entropy(self, new_outputs: torch.Tensor, old_outputs: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the new logits against the old model's soft targets, both at ``T``."""
        if self.distillation == "avalanche":
            return super().cross_entropy(new_outputs, old_outputs)
        targets = torch.softmax(old_outputs / self.T, dim=1)
        return nn.functional.cross_entropy(new_outputs / self.T, targets)


class BiCMethod(Method):
    """Avalanche's BiC (Wu et al., CVPR 2019): ``SupervisedTemplate`` + ``BiCPlugin``,
    as ``avalanche.training.BiC`` composes them, with the shared class-balanced
    herding memory as its storage policy (Avalanche's default is experience-balanced).

    BiC holds out a validation split of ``int(val_percentage * memory)`` images
    (per class an equal share, taken from each new class's training data) on top of
    its memory, keeps one previous model and the last bias layer.

    Args:
        val_percentage, T, stage_2_epochs, lamb, lr: ``BiCPlugin``'s arguments, at
            Avalanche's defaults (FACIL's): 0.1, 2, 200, -1 (``n_old / n_all``, the
            paper's), 0.1.
        distillation: ``"paper"`` (default) or ``"avalanche"`` (see :class:`RepairedBiCPlugin`).
        sampling: ``"replay"`` (default) or ``"union"`` (see :class:`RepairedBiCPlugin`).
    """

    exemplars = "required"

    def __init__(  # noqa: D107
        self,
        name: str,
        val_percentage: float = 0.1,
        T: int = 2,
        stage_2_epochs: int = 200,
        lamb: float = -1,
        lr: float = 0.1,
        distillation: str = "paper",
        sampling: str = "replay",
    ) -> None:
        super().__init__(
            name,
            val_percentage=val_percentage,
            T=T,
            stage_2_epochs=stage_2_epochs,
            lamb=lamb,
            lr=lr,
            distillation=distillation,
            sampling=sampling,
        )

    def build(  # noqa: D102
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> Any:
        model = setting.model()
        plugin = RepairedBiCPlugin(
            mem_size=n_exemplars,
            storage_policy=herding_buffer(n_exemplars),
            **self.params(options),
        )
        return SupervisedTemplate(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=nn.CrossEntropyLoss(),
            plugins=[plugin],
            **setting.template_args(),
        )

    def stored_bytes(self, strategy: Any, setting: Setting) -> dict[str, int]:  # noqa: D102
        bic = find_plugin(strategy, BiCPluginBase)
        validation = sum(len(group.buffer) for group in bic.val_buffer.values())
        return self._counts(
            exemplars=len(bic.storage_policy.buffer) * setting.image_bytes,
            validation=validation * setting.image_bytes,
            models=model_bytes(bic.model_old),
            other=model_bytes(bic.bias_layer),
        )

    def fixed_bytes(  # noqa: D102
        self, setting: Setting, options: dict[str, Any] | None = None
    ) -> int:
        last = len(setting.experience_classes[-1]) if len(setting.experience_classes) > 1 else None
        # alpha, beta (fp32) and the class ids (int64)
        bias_layer = 0 if last is None else 4 + 4 + 8 * last
        return model_bytes(setting.model("final")) + bias_layer

    def min_exemplars(self, options: dict[str, Any] | None = None) -> int:  # noqa: D102
        # its validation split needs one image
        return math.ceil(1 / self.params(options)["val_percentage"])

    def exemplar_bytes(  # noqa: D102
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> int:
        # BiCPlugin's own rounding
        validation = int(self.params(options)["val_percentage"] * n_exemplars)
        return (n_exemplars + validation) * setting.image_bytes


register(BiCMethod("bic"))
register(BiCMethod("bic-union", sampling="union"))
