"""Distillation maths of M2KD, as pure functions of tensors.

Nothing here knows about Avalanche, plugins or snapshots: the plugins gather the
logits, features and class sets and call these functions. Every function is
differentiable with respect to the *student* arguments only; teacher arguments are
treated as constants (pass them detached or computed under ``torch.no_grad``).

Notation (see ``SPEC.md``): ``z`` are student logits, ``z^(k)`` teacher ``k``'s,
``v_S`` the sub-vector of units for class set ``S`` and
``sigma_T(v) = softmax(v / T)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "FeatureLoss",
    "TeacherSlice",
    "attention_map",
    "feature_distillation_loss",
    "kd_loss",
    "multi_level_distillation_loss",
    "multi_model_distillation_loss",
    "sample_teachers",
    "teacher_slices",
]

TeacherSlice = Literal["own", "cumulative"]
FeatureLoss = Literal["normalized_mse", "mse", "attention"]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    r"""Knowledge-distillation loss of Hinton et al. with the ``T^2`` scale.

    .. math::
        T^2 \cdot \frac{1}{N}\sum_{n}
        \mathrm{KL}\big(\sigma_T(z^{t}_n) \,\|\, \sigma_T(z^{s}_n)\big)

    Avalanche's ``LwFPlugin`` computes the same KL *without* the ``T^2`` factor, so
    ``kd_loss == T**2 * LwF``-loss for equal inputs.

    Args:
        student_logits: ``(N, C)`` logits of the student over the distilled units.
        teacher_logits: ``(N, C)`` logits of the teacher over the same units.
        temperature: softmax temperature ``T > 0``.

    Returns:
        A scalar tensor.

    Example:
        >>> s = torch.tensor([[0.0, 0.0]])
        >>> kd_loss(s, s).item()
        0.0
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "Expected student and teacher logits of the same shape, but got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    log_q = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    return kl * temperature**2


def teacher_slices(
    classes_per_experience: Sequence[Sequence[int]],
    teacher_ids: Sequence[int],
    slice_mode: TeacherSlice = "own",
) -> tuple[list[list[int]], list[float]]:
    r"""The units each teacher supervises, and its weight in the multi-model loss.

    ``classes_per_experience[k]`` is ``C_k``, the classes introduced by experience
    ``k`` (0-based); the student is training on experience ``t = len(...)`` and
    ``teacher_ids`` are the snapshots that distil (a subset of ``0..t-1``).

    * ``"own"``: teacher ``k`` supervises ``C_k`` with weight ``|C_k| / |C_used|``
      where ``C_used`` is the union of the used teachers' own classes (with all
      teachers this is ``|C_k| / |C_{<t}|``, as in SPEC). A teacher whose
      experience introduced a single class supervises one logit, whose softmax is
      always 1: its term is 0. On a stream of one class per experience only the
      teachers of multi-class experiences (e.g. the base one) distil.
    * ``"cumulative"``: teacher ``k`` supervises ``C_{<=k}`` with uniform weight
      ``1 / len(teacher_ids)``. With the last teacher only, this is LwF.

    Args:
        classes_per_experience: class ids introduced by each finished experience.
        teacher_ids: 0-based snapshot indices that act as teachers.
        slice_mode: ``"own"`` or ``"cumulative"``.

    Returns:
        ``(slices, weights)``: one list of class ids and one float per teacher.

    Example:
        >>> teacher_slices([[0, 1], [2, 3]], [0, 1], "own")
        ([[0, 1], [2, 3]], [0.5, 0.5])
        >>> teacher_slices([[0, 1], [2, 3]], [0, 1], "cumulative")
        ([[0, 1], [0, 1, 2, 3]], [0.5, 0.5])
    """
    if slice_mode not in ("own", "cumulative"):
        raise ValueError(
            f"Expected argument `teacher_slice` to be 'own' or 'cumulative', but got {slice_mode!r}"
        )
    for k in teacher_ids:
        if not 0 <= k < len(classes_per_experience):
            raise IndexError(f"teacher {k} has no recorded classes")
    slices: list[list[int]] = []
    for k in teacher_ids:
        if slice_mode == "own":
            slices.append(list(classes_per_experience[k]))
        else:
            slices.append([c for j in range(k + 1) for c in classes_per_experience[j]])
    if slice_mode == "own":
        total = sum(len(s) for s in slices)
        weights = [len(s) / total for s in slices]
    else:
        weights = [1.0 / len(slices)] * len(slices)
    return slices, weights


def sample_teachers(
    n_teachers: int, k: int, generator: torch.Generator | None = None
) -> tuple[list[int], float]:
    r"""Pick ``k`` of ``n_teachers`` positions uniformly without replacement.

    Returns the chosen positions (sorted) and the factor ``n / k`` by which their
    weights must be multiplied: each position is chosen with probability ``k / n``,
    so :math:`\frac{n}{k}\sum_{j \in S} w_j L_j` is an unbiased estimate of
    :math:`\sum_j w_j L_j`, at the cost of ``k`` teacher forwards instead of ``n``.
    With ``k >= n`` every position is returned with factor 1 (the exact sum).

    Args:
        n_teachers: number of teachers available.
        k: number to use, ``>= 1``.
        generator: random generator (the global one if ``None``).

    Example:
        >>> sample_teachers(3, 5)
        ([0, 1, 2], 1.0)
        >>> positions, scale = sample_teachers(4, 2, torch.Generator().manual_seed(0))
        >>> len(positions), scale
        (2, 2.0)
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"Expected argument `teacher_sample` to be an int >= 1, but got {k!r}")
    if k >= n_teachers:
        return list(range(n_teachers)), 1.0
    chosen = torch.randperm(n_teachers, generator=generator)[:k]
    return sorted(int(i) for i in chosen), n_teachers / k


def multi_model_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Sequence[Tensor],
    slices: Sequence[Sequence[int] | Tensor],
    weights: Sequence[float],
    temperature: float = 2.0,
) -> Tensor:
    r"""Weighted sum of per-teacher distillation losses on each teacher's slice.

    .. math::
        L_{mm} = \sum_k w_k \, T^2 \, \mathrm{KL}\big(\sigma_T(z^{(k)}_{S_k}) \,\|\,
        \sigma_T(z_{S_k})\big)

    Units outside every ``S_k`` (e.g. classes not yet seen, masked by a fixed head)
    never enter the loss.

    Args:
        student_logits: ``(N, C)`` student logits over the whole head.
        teacher_logits: one ``(N, C_k)`` tensor per teacher (``C_k`` may be smaller
            than ``C`` when the teacher's head was smaller); indexed by class id.
        slices: class ids supervised by each teacher (see :func:`teacher_slices`).
        weights: one weight per teacher.
        temperature: softmax temperature.

    Returns:
        A scalar tensor (zero when there is no teacher).
    """
    if not (len(teacher_logits) == len(slices) == len(weights)):
        raise ValueError(
            "Expected one slice and one weight per teacher, but got "
            f"{len(teacher_logits)} teachers, {len(slices)} slices, {len(weights)} weights"
        )
    loss = student_logits.new_zeros(())
    for t_logits, idx, w in zip(teacher_logits, slices, weights, strict=True):
        idx_t = torch.as_tensor(idx, dtype=torch.long, device=student_logits.device)
        loss = loss + w * kd_loss(student_logits[:, idx_t], t_logits[:, idx_t], temperature)
    return loss


def attention_map(features: Tensor) -> Tensor:
    r"""Spatial attention map of Zagoruyko & Komodakis (2017), L2-normalised.

    .. math::
        A(F) = \mathrm{vec}\Big(\sum_c F_c^2\Big)
        / \Big\|\mathrm{vec}\Big(\sum_c F_c^2\Big)\Big\|_2

    Args:
        features: ``(N, C, *spatial)`` feature maps with at least one spatial dim.

    Returns:
        ``(N, prod(spatial))`` normalised attention vectors.
    """
    if features.dim() < 3:
        raise ValueError(
            "The 'attention' feature loss needs feature maps with spatial dimensions "
            f"(N, C, H, W), but got shape {tuple(features.shape)}; use "
            "feature_loss='normalized_mse' or pick a convolutional layer"
        )
    am = features.pow(2).sum(dim=1).flatten(1)
    return F.normalize(am, p=2, dim=1)


def feature_distillation_loss(
    student_features: Tensor,
    teacher_features: Tensor,
    kind: FeatureLoss = "normalized_mse",
) -> Tensor:
    r"""Distance between one layer's student and teacher features.

    * ``"normalized_mse"``: :math:`\mathrm{mean}_n \| n(F_n) - n(F^{t}_n) \|_2^2`
      with ``n`` the per-sample L2 normalisation of the flattened map (SPEC default;
      bounded in ``[0, 4]``, independent of the layer's size and scale).
    * ``"mse"``: the plain element-wise mean squared error (``F.mse_loss``).
    * ``"attention"``: ``normalized_mse`` between :func:`attention_map` s.

    Args:
        student_features: ``(N, ...)`` student activations.
        teacher_features: teacher activations of the same shape.
        kind: one of ``"normalized_mse"``, ``"mse"``, ``"attention"``.

    Returns:
        A scalar tensor.

    Example:
        >>> a = torch.tensor([[3.0, 4.0]]); b = torch.tensor([[6.0, 8.0]])
        >>> feature_distillation_loss(a, b).item()
        0.0
    """
    if student_features.shape != teacher_features.shape:
        raise ValueError(
            "Expected student and teacher features of the same shape, but got "
            f"{tuple(student_features.shape)} and {tuple(teacher_features.shape)}"
        )
    if kind == "mse":
        return F.mse_loss(student_features, teacher_features)
    if kind == "normalized_mse":
        s = F.normalize(student_features.flatten(1), p=2, dim=1)
        t = F.normalize(teacher_features.flatten(1), p=2, dim=1)
    elif kind == "attention":
        s, t = attention_map(student_features), attention_map(teacher_features)
    else:
        raise ValueError(
            "Expected argument `feature_loss` to be one of 'normalized_mse', 'mse', "
            f"'attention', but got {kind!r}"
        )
    return (s - t).pow(2).sum(dim=1).mean()


def multi_level_distillation_loss(
    student_features: Sequence[Tensor],
    teacher_features: Sequence[Sequence[Tensor]],
    kind: FeatureLoss = "normalized_mse",
    teacher_weights: Sequence[float] | None = None,
) -> Tensor:
    r"""Feature distillation over layers and teachers.

    .. math::
        L_{feat} = \sum_j w_j \frac{1}{|L|}\sum_{l \in L} d\big(F_l, F^{(j)}_l\big)

    Args:
        student_features: one tensor per layer ``l``.
        teacher_features: for each teacher ``j``, one tensor per layer (same order).
        kind: the per-layer distance, see :func:`feature_distillation_loss`.
        teacher_weights: one weight per teacher; defaults to the uniform average.

    Returns:
        A scalar tensor (zero with no teacher).
    """
    if not student_features:
        raise ValueError("Expected at least one feature layer, got none")
    n_teachers = len(teacher_features)
    if teacher_weights is None:
        teacher_weights = [1.0 / n_teachers] * n_teachers if n_teachers else []
    if len(teacher_weights) != n_teachers:
        raise ValueError(
            f"Expected one weight per teacher ({n_teachers}), got {len(teacher_weights)}"
        )
    loss = student_features[0].new_zeros(())
    for feats, w in zip(teacher_features, teacher_weights, strict=True):
        if len(feats) != len(student_features):
            raise ValueError(
                f"Expected {len(student_features)} teacher feature maps, got {len(feats)}"
            )
        per_layer = [
            feature_distillation_loss(s, t, kind)
            for s, t in zip(student_features, feats, strict=True)
        ]
        loss = loss + w * torch.stack(per_layer).mean()
    return loss
