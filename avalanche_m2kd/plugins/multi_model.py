"""Multi-model logit distillation: the student distils from *all* previous snapshots."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from avalanche_m2kd.losses import (
    TeacherSlice,
    multi_model_distillation_loss,
    sample_teachers,
    teacher_slices,
)
from avalanche_m2kd.option_types import (
    PLUGIN_TEACHER_OPTIONS,
    DistillationOptions,
    TeacherOptions,
    TeacherSet,
    option_keywords,
)
from avalanche_m2kd.options import check_choice, check_number
from avalanche_m2kd.plugins.teachers import TeacherPlugin
from avalanche_m2kd.snapshots import SnapshotStore

__all__ = ["MultiModelDistillationPlugin"]

#: The defaults of the distillation options this plugin takes under its own names.
_DEFAULT = DistillationOptions()


# Avalanche types no `__init_subclass__` keyword: mypy does not know `supports_distributed`.
class MultiModelDistillationPlugin(TeacherPlugin, supports_distributed=True):  # type: ignore[call-arg]
    r"""Adds ``weight * L_mm`` to the loss, distilling from every stored snapshot.

    .. math::
        L_{mm} = \sum_k w_k\, T^2\,
            \mathrm{KL}\big(\sigma_T(z^{(k)}_{S_k}) \,\|\, \sigma_T(z_{S_k})\big)

    with ``S_k`` and ``w_k`` from :func:`avalanche_m2kd.losses.teacher_slices`. The
    inputs are the current mini-batch (new data and exemplars alike); teachers run
    without gradient, in eval mode except for ``teacher_bn``. With ``teachers="last"`` and
    ``teacher_slice="cumulative"`` this is LwF with the ``T^2`` scale.

    Args:
        temperature: softmax temperature ``T``, > 0 (default 2, ours: the usual
            distillation temperature).
        weight: ``lambda_mm`` >= 0 (default 1, ours).
        teacher_slice: ``"own"`` — teacher ``k`` supervises the classes it
            introduced, weights ``|C_k| / |C_<t|`` (our reading of the paper);
            ``"cumulative"`` — teacher ``k`` supervises every class it knew,
            uniform weights. Default ``"own"``, chosen by our Split Fashion-MNIST
            ablation (:doc:`/benchmarks/fashion-mnist`).
        teachers: ``"all"`` snapshots (default, the paper) or only the ``"last"`` one.
        teacher_sample: distil from only this many snapshots per mini-batch, drawn
            uniformly without replacement (from the global RNG) and reweighted by
            ``n / k`` — an unbiased estimate of the full sum
            (:func:`~avalanche_m2kd.losses.sample_teachers`) whose cost stays at
            ``k`` teacher forwards however many snapshots there are. ``None``
            (default) uses them all.
        store: a shared :class:`SnapshotStore`; ``None`` keeps a private full-copy
            store, so the plugin works beside any Avalanche strategy.
        head_name: the classifier head, for a private store (found if ``None``).
        teacher_options, **options: how the teachers run, as one
            :class:`~avalanche_m2kd.option_types.TeacherOptions` or as its fields
            (keyword only: ``teacher_bn``, ``teacher_dtype``, ``cache_teachers``,
            ``teacher_batching``), as in :class:`~avalanche_m2kd.plugins.TeacherPlugin`.

    Example:
        >>> from avalanche.training import Naive
        >>> plugin = MultiModelDistillationPlugin(temperature=2.0, teachers="all")
        >>> # Naive(model, optimizer, criterion=..., plugins=[plugin])
    """

    @option_keywords(PLUGIN_TEACHER_OPTIONS)
    def __init__(
        self,
        temperature: float = _DEFAULT.temperature,
        weight: float = _DEFAULT.mm_weight,
        teacher_slice: TeacherSlice = _DEFAULT.teacher_slice,
        teachers: TeacherSet = _DEFAULT.teachers,
        store: SnapshotStore | None = None,
        head_name: str | None = None,
        teacher_sample: int | None = _DEFAULT.teacher_sample,
        *,
        teacher_options: TeacherOptions | None = None,
        **options: Any,
    ) -> None:
        super().__init__(store, head_name, teacher_options=teacher_options, **options)
        if teacher_sample is not None:
            sample_teachers(1, teacher_sample)  # validates it
        self.temperature = check_number(temperature, "temperature", strict=True)
        self.weight = check_number(weight, "weight")
        self.teacher_slice: TeacherSlice = check_choice(
            teacher_slice, TeacherSlice, "teacher_slice"
        )
        self.teachers: TeacherSet = check_choice(teachers, TeacherSet, "teachers")
        self.teacher_sample = teacher_sample
        self._plan: tuple[list[int], list[list[int] | Tensor], list[float]] = ([], [], [])

    @classmethod
    def option_keywords(cls, distillation: DistillationOptions) -> dict[str, Any]:
        """This plugin's keywords in ``distillation``: its ``temperature``, ``mm_weight``
        (``weight``), ``teacher_slice``, ``teachers`` and ``teacher_sample``."""
        d = distillation
        return {"temperature": d.temperature, "weight": d.mm_weight,
                "teacher_slice": d.teacher_slice, "teachers": d.teachers,
                "teacher_sample": d.teacher_sample}

    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        super().before_training_exp(strategy, *args, **kwargs)
        ids = self.teacher_ids(self.teachers)
        indices, weights = (
            teacher_slices(self.store.classes, ids, self.teacher_slice) if ids else ([], [])
        )
        slices: list[list[int] | Tensor] = list(indices)
        device = getattr(strategy, "device", None)
        if device is not None:  # index tensors made once: no host-to-device copy in a step
            slices = [torch.tensor(s, dtype=torch.long, device=device) for s in indices]
        self._plan = (ids, slices, weights)

    def teacher_outputs(
        self, strategy: Any
    ) -> tuple[list[Tensor], list[list[int] | Tensor], list[float]] | None:
        """The teachers' logits on the mini-batch, with their slices and weights."""
        ids, slices, weights = self._plan
        if not ids or self.weight == 0:
            return None
        if self.teacher_sample is not None and self.teacher_sample < len(ids):
            chosen, scale = sample_teachers(len(ids), self.teacher_sample)
            ids = [ids[i] for i in chosen]
            slices = [slices[i] for i in chosen]
            weights = [weights[i] * scale for i in chosen]
        return [logits for logits, _ in self.run_teachers(ids, strategy.mb_x)], slices, weights

    def before_backward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        outputs = self.pending_outputs(strategy)
        if outputs is None:
            return
        logits, slices, weights = outputs
        strategy.loss += self.weight * multi_model_distillation_loss(
            strategy.mb_output, logits, slices, weights, self.temperature
        )
