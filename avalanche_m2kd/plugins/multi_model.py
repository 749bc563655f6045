"""Multi-model logit distillation: the student distils from *all* previous snapshots."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from avalanche_m2kd.batched_teachers import TeacherBatching
from avalanche_m2kd.losses import (
    TeacherSlice,
    multi_model_distillation_loss,
    sample_teachers,
    teacher_slices,
)
from avalanche_m2kd.option_types import DistillationOptions, TeacherOptions, TeacherSet
from avalanche_m2kd.options import check_choice, check_number
from avalanche_m2kd.plugins.teachers import TeacherPlugin
from avalanche_m2kd.snapshots import SnapshotStore, TeacherBatchNorm

__all__ = ["MultiModelDistillationPlugin"]


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
        teacher_bn: which statistics the teachers' BatchNorm layers normalise the
            mini-batch with: ``"batch"`` (default, ours) — the batch's own, as the
            student does in training mode and as Avalanche's ``LwF`` teacher does;
            ``"running"`` — the snapshot's stored statistics (its eval-mode outputs),
            measured lower (:doc:`/benchmarks/fashion-mnist`).
        teacher_sample: distil from only this many snapshots per mini-batch, drawn
            uniformly without replacement (from the global RNG) and reweighted by
            ``n / k`` — an unbiased estimate of the full sum
            (:func:`~avalanche_m2kd.losses.sample_teachers`) whose cost stays at
            ``k`` teacher forwards however many snapshots there are. ``None``
            (default) uses them all.
        teacher_dtype: ``None`` (default) runs the teacher forwards in fp32;
            ``torch.bfloat16`` runs them under ``torch.autocast`` (any device), or
            ``torch.float16`` (CUDA only: refused on CPU, where its kernels are
            slow); teacher logits and features come back as float32, so the losses
            stay fp32. What it saves and costs: :doc:`/benchmarks/cost`.
        teacher_batching: ``"loop"`` (default) runs the teachers one after the
            other; ``"vmap"`` runs same-architecture teachers as one vmapped forward
            over their stacked weights, ``"streams"`` each on its own CUDA stream (the
            loop on a CPU); same losses to float rounding. Needs ``cache_teachers``;
            see :mod:`avalanche_m2kd.batched_teachers`.
        cache_teachers: ``True`` keeps every teacher dense for the whole experience
            (the fastest); ``False`` builds, runs and frees each teacher inside the
            step, holding at most one dense teacher (memory against rebuild time:
            :doc:`/benchmarks/cost`). ``None`` (default) leaves the store's setting
            (``True`` for a new store); see :class:`~avalanche_m2kd.plugins.TeacherPlugin`.
        store: a shared :class:`SnapshotStore`; ``None`` keeps a private full-copy
            store, so the plugin works beside any Avalanche strategy.
        head_name: the classifier head, for a private store (found if ``None``).
        teacher_options: ``teacher_bn``, ``teacher_dtype``, ``cache_teachers`` and
            ``teacher_batching`` as one
            :class:`~avalanche_m2kd.option_types.TeacherOptions` (see
            :class:`~avalanche_m2kd.plugins.TeacherPlugin`).

    Example:
        >>> from avalanche.training import Naive
        >>> plugin = MultiModelDistillationPlugin(temperature=2.0, teachers="all")
        >>> # Naive(model, optimizer, criterion=..., plugins=[plugin])
    """

    def __init__(
        self,
        temperature: float = 2.0,
        weight: float = 1.0,
        teacher_slice: TeacherSlice = "own",
        teachers: TeacherSet = "all",
        store: SnapshotStore | None = None,
        head_name: str | None = None,
        teacher_bn: TeacherBatchNorm = "batch",
        teacher_sample: int | None = None,
        teacher_dtype: torch.dtype | None = None,
        cache_teachers: bool | None = None,
        teacher_batching: TeacherBatching = "loop",
        *,
        teacher_options: TeacherOptions | None = None,
    ) -> None:
        super().__init__(
            store, head_name, teacher_bn, teacher_dtype, cache_teachers, teacher_batching,
            teacher_options=teacher_options,
        )
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
