"""Distillation maths: KD against hand values, the LwF identity, slices, feature losses."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from avalanche.training.plugins import LwFPlugin
from avalanche.training.regularization import LearningWithoutForgetting
from torch import nn

from avalanche_m2kd.losses import (
    attention_map,
    feature_distillation_loss,
    kd_loss,
    multi_level_distillation_loss,
    multi_model_distillation_loss,
    teacher_slices,
)


def _softmax(values, temperature):
    exps = [math.exp(v / temperature) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _hand_kd(student_rows, teacher_rows, temperature):
    """T^2 * batchmean KL(softmax(t/T) || softmax(s/T)), in plain Python."""
    total = 0.0
    for s_row, t_row in zip(student_rows, teacher_rows, strict=True):
        p = _softmax(s_row, temperature)
        q = _softmax(t_row, temperature)
        total += sum(qi * (math.log(qi) - math.log(pi)) for pi, qi in zip(p, q, strict=True))
    return temperature**2 * total / len(student_rows)


# --------------------------------------------------------------------------- kd_loss


def test_kd_loss_matches_hand_computed_2x3_example():
    student = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
    teacher = [[3.0, 2.0, 1.0], [1.0, 0.0, -1.0]]
    expected = _hand_kd(student, teacher, 2.0)
    # The same number written out, so that a change of the helper cannot hide a change.
    assert expected == pytest.approx(0.79715524, abs=1e-7)
    got = kd_loss(torch.tensor(student), torch.tensor(teacher), temperature=2.0)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_kd_loss_hand_value_at_other_temperatures(temperature):
    student = [[0.5, -1.0, 2.0], [1.5, 0.0, 0.3]]
    teacher = [[-0.5, 1.0, 0.0], [2.0, 2.0, -2.0]]
    got = kd_loss(torch.tensor(student), torch.tensor(teacher), temperature)
    assert got.item() == pytest.approx(_hand_kd(student, teacher, temperature), rel=1e-5)


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(6, 5) * 3
    assert kd_loss(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # Softmax is shift-invariant per row: a constant offset is still "equal".
    assert kd_loss(logits + 7.0, logits).item() == pytest.approx(0.0, abs=1e-5)
    assert kd_loss(logits, torch.randn(6, 5)).item() > 1e-3


def test_kd_loss_gradient_reaches_the_student_only():
    student_net = nn.Linear(4, 3)
    teacher_net = nn.Linear(4, 3)
    x = torch.randn(8, 4)
    with torch.no_grad():
        teacher_logits = teacher_net(x)
    loss = kd_loss(student_net(x), teacher_logits)
    loss.backward()
    assert student_net.weight.grad is not None
    assert student_net.weight.grad.abs().sum() > 0
    assert teacher_net.weight.grad is None and teacher_net.bias.grad is None


def test_kd_loss_rejects_different_shapes():
    with pytest.raises(ValueError, match="same shape"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))


# ----------------------------------------------------------------- the LwF identity


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_one_teacher_cumulative_slice_is_t_squared_times_avalanche_lwf(temperature):
    classes = [[0, 1], [2, 3]]
    student_out = torch.randn(10, 6)  # head already grown to 6 units
    teacher_out = torch.randn(10, 4)  # the previous model only had 4
    slices, weights = teacher_slices(classes, [1], "cumulative")
    ours = multi_model_distillation_loss(student_out, [teacher_out], slices, weights, temperature)

    lwf = LearningWithoutForgetting(alpha=1, temperature=temperature)
    theirs = lwf._distillation_loss(student_out, teacher_out, {0, 1, 2, 3})
    assert ours.item() == pytest.approx(temperature**2 * theirs.item(), rel=1e-5)
    assert ours.item() > 0


def test_lwf_identity_through_the_lwf_plugin_object():
    temperature = 2.0
    student = nn.Linear(5, 6)
    teacher = nn.Linear(5, 4)
    x = torch.randn(12, 5)

    plugin = LwFPlugin(alpha=1, temperature=temperature)
    plugin.lwf.prev_model = teacher
    plugin.lwf.prev_classes_by_task[0] = {0, 1, 2, 3}
    out = student(x)
    strategy = SimpleNamespace(loss=torch.zeros(()), mb_x=x, mb_output=out, model=student)
    plugin.before_backward(strategy)
    lwf_loss = strategy.loss

    with torch.no_grad():
        teacher_out = teacher(x)
    slices, weights = teacher_slices([[0, 1, 2], [3]], [1], "cumulative")
    ours = multi_model_distillation_loss(out, [teacher_out], slices, weights, temperature)
    assert ours.item() == pytest.approx(temperature**2 * lwf_loss.item(), rel=1e-5)


# ------------------------------------------------------------------- teacher_slices

UNEVEN = [[0, 1], [2], [3, 4, 5]]


def test_teacher_slices_own_with_uneven_class_counts():
    slices, weights = teacher_slices(UNEVEN, [0, 1, 2], "own")
    assert slices == [[0, 1], [2], [3, 4, 5]]
    assert weights == pytest.approx([2 / 6, 1 / 6, 3 / 6])
    assert sum(weights) == pytest.approx(1.0)


def test_teacher_slices_own_with_a_subset_of_teachers_renormalises():
    slices, weights = teacher_slices(UNEVEN, [0, 2], "own")
    assert slices == [[0, 1], [3, 4, 5]]
    assert weights == pytest.approx([2 / 5, 3 / 5])
    assert sum(weights) == pytest.approx(1.0)


def test_teacher_slices_cumulative_with_uneven_class_counts():
    slices, weights = teacher_slices(UNEVEN, [0, 1, 2], "cumulative")
    assert slices == [[0, 1], [0, 1, 2], [0, 1, 2, 3, 4, 5]]
    assert weights == pytest.approx([1 / 3, 1 / 3, 1 / 3])


def test_teacher_slices_cumulative_last_teacher_covers_all_old_classes():
    slices, weights = teacher_slices(UNEVEN, [2], "cumulative")
    assert slices == [[0, 1, 2, 3, 4, 5]]
    assert weights == [1.0]


def test_teacher_slices_keep_non_contiguous_class_ids():
    slices, weights = teacher_slices([[7, 3], [1]], [0, 1], "cumulative")
    assert slices == [[7, 3], [7, 3, 1]]


def test_teacher_slices_bad_mode_names_the_argument():
    with pytest.raises(ValueError, match="teacher_slice"):
        teacher_slices(UNEVEN, [0], "all")


def test_teacher_slices_unknown_teacher_raises():
    with pytest.raises(IndexError):
        teacher_slices(UNEVEN, [3], "own")


# ---------------------------------------------------- multi_model_distillation_loss


def _kl_reference(student, teacher, idx, temperature):
    """Independent KD on one slice: T^2 * mean_n sum q (log q - log p)."""
    s = student[:, idx] / temperature
    t = teacher[:, idx] / temperature
    q = t.softmax(dim=1)
    return temperature**2 * (q * (q.log() - s.log_softmax(dim=1))).sum(dim=1).mean()


@pytest.mark.parametrize("mode", ["own", "cumulative"])
def test_multi_model_loss_is_the_weighted_sum_over_slices(mode):
    temperature = 2.0
    student = torch.randn(7, 8)
    # Teacher k had a head of |C_{<=k}| units (narrower than the student's).
    teachers = [torch.randn(7, 2), torch.randn(7, 3), torch.randn(7, 6)]
    slices, weights = teacher_slices(UNEVEN, [0, 1, 2], mode)
    got = multi_model_distillation_loss(student, teachers, slices, weights, temperature)
    expected = sum(
        w * _kl_reference(student, t, idx, temperature)
        for t, idx, w in zip(teachers, slices, weights, strict=True)
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert got.item() > 0


def test_multi_model_loss_ignores_units_outside_every_slice():
    student = torch.randn(5, 6)
    teachers = [torch.randn(5, 2), torch.randn(5, 3)]
    slices, weights = teacher_slices([[0, 1], [2]], [0, 1], "own")
    reference = multi_model_distillation_loss(student, teachers, slices, weights)

    for value in (-1000.0, 0.0, 50.0):
        masked = student.clone()
        masked[:, 3:] = value  # unseen units (masked by a fixed head, or anything)
        got = multi_model_distillation_loss(masked, teachers, slices, weights)
        assert got.item() == pytest.approx(reference.item(), rel=1e-6)


def test_multi_model_loss_accepts_tensor_slices():
    student = torch.randn(4, 5)
    teachers = [torch.randn(4, 5)]
    as_list = multi_model_distillation_loss(student, teachers, [[1, 3, 4]], [1.0])
    as_tensor = multi_model_distillation_loss(student, teachers, [torch.tensor([1, 3, 4])], [1.0])
    assert as_tensor.item() == pytest.approx(as_list.item())


def test_multi_model_loss_with_no_teacher_is_zero():
    loss = multi_model_distillation_loss(torch.randn(3, 4), [], [], [])
    assert loss.dim() == 0 and loss.item() == 0.0


def test_multi_model_loss_gradient_only_on_sliced_units():
    student = torch.randn(4, 6, requires_grad=True)
    teacher = torch.randn(4, 6)
    multi_model_distillation_loss(student, [teacher], [[0, 2]], [1.0]).backward()
    grad_cols = student.grad.abs().sum(dim=0)
    assert (grad_cols[[0, 2]] > 0).all()
    assert (grad_cols[[1, 3, 4, 5]] == 0).all()


@pytest.mark.parametrize(
    "n_teachers, n_slices, n_weights", [(2, 1, 2), (1, 1, 2), (2, 2, 1), (0, 1, 1)]
)
def test_multi_model_loss_rejects_mismatched_lists(n_teachers, n_slices, n_weights):
    student = torch.randn(3, 4)
    with pytest.raises(ValueError, match="one slice and one weight per teacher"):
        multi_model_distillation_loss(
            student,
            [torch.randn(3, 4)] * n_teachers,
            [[0, 1]] * n_slices,
            [1.0] * n_weights,
        )


# ------------------------------------------------------------------ feature losses


def test_normalized_mse_hand_values():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0]])
    assert feature_distillation_loss(a, b).item() == pytest.approx(2.0)  # orthogonal
    assert feature_distillation_loss(a, -a).item() == pytest.approx(4.0)  # opposite
    assert feature_distillation_loss(a, a).item() == pytest.approx(0.0)
    # Mean over the batch: one sample at 0, one at 4.
    batch_s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    batch_t = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    assert feature_distillation_loss(batch_s, batch_t).item() == pytest.approx(2.0)


def test_normalized_mse_is_scale_invariant_per_sample():
    s = torch.randn(4, 3, 5, 5)
    t = torch.randn(4, 3, 5, 5)
    base = feature_distillation_loss(s, t, "normalized_mse")
    scale_s = torch.tensor([0.1, 2.0, 30.0, 1.0]).view(4, 1, 1, 1)
    scale_t = torch.tensor([5.0, 0.01, 1.0, 7.0]).view(4, 1, 1, 1)
    scaled = feature_distillation_loss(s * scale_s, t * scale_t, "normalized_mse")
    assert scaled.item() == pytest.approx(base.item(), rel=1e-5)
    # Plain mse is not scale invariant: the test above could fail.
    assert feature_distillation_loss(s * 10, t, "mse").item() != pytest.approx(
        feature_distillation_loss(s, t, "mse").item(), rel=1e-2
    )


def test_mse_equals_torch_mse_loss():
    s = torch.randn(3, 4, 2, 2)
    t = torch.randn(3, 4, 2, 2)
    got = feature_distillation_loss(s, t, "mse")
    assert got.item() == pytest.approx(F.mse_loss(s, t).item(), rel=1e-6)


def _tiny_maps():
    student = torch.zeros(1, 2, 2, 2)
    student[0, 0] = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    student[0, 1] = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    teacher = torch.zeros(1, 2, 2, 2)
    teacher[0, 0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    return student, teacher


def test_attention_map_hand_value():
    student, teacher = _tiny_maps()
    # sum_c F_c^2 = [[4 + 1, 1], [0, 0]] -> [5, 1, 0, 0] / sqrt(26)
    expected = torch.tensor([[5.0, 1.0, 0.0, 0.0]]) / math.sqrt(26)
    assert torch.allclose(attention_map(student), expected)
    assert torch.allclose(attention_map(teacher), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_attention_loss_hand_value():
    student, teacher = _tiny_maps()
    # ||[5, 1, 0, 0]/sqrt26 - [1, 0, 0, 0]||^2 = (5/sqrt26 - 1)^2 + 1/26 = 2 - 10/sqrt26
    got = feature_distillation_loss(student, teacher, "attention")
    assert got.item() == pytest.approx(2 - 10 / math.sqrt(26), rel=1e-4)
    # Swapping the roles gives the same (symmetric) distance.
    assert feature_distillation_loss(teacher, student, "attention").item() == pytest.approx(
        got.item(), rel=1e-4
    )


def test_attention_on_flat_features_raises_mentioning_spatial():
    with pytest.raises(ValueError, match="spatial"):
        feature_distillation_loss(torch.randn(4, 8), torch.randn(4, 8), "attention")


def test_feature_loss_rejects_unknown_kind_and_shape_mismatch():
    with pytest.raises(ValueError, match="feature_loss"):
        feature_distillation_loss(torch.randn(2, 3), torch.randn(2, 3), "cosine")
    with pytest.raises(ValueError, match="same shape"):
        feature_distillation_loss(torch.randn(2, 3), torch.randn(2, 4))


# --------------------------------------------------- multi_level_distillation_loss

E1 = torch.tensor([[1.0, 0.0]])
E2 = torch.tensor([[0.0, 1.0]])


def _two_teachers():
    """Layer-wise normalized_mse: teacher A (2, 4) -> mean 3, teacher B (0, 2) -> mean 1."""
    student = [E1, E1.clone()]
    teacher_a = [E2, -E1]
    teacher_b = [E1.clone(), E2]
    return student, [teacher_a, teacher_b]


def test_multi_level_averages_layers_then_teachers():
    student, teachers = _two_teachers()
    assert multi_level_distillation_loss(student, teachers).item() == pytest.approx(2.0)
    assert multi_level_distillation_loss(student, teachers[:1]).item() == pytest.approx(3.0)
    assert multi_level_distillation_loss(student, teachers[1:]).item() == pytest.approx(1.0)


def test_multi_level_with_teacher_weights():
    student, teachers = _two_teachers()
    got = multi_level_distillation_loss(student, teachers, teacher_weights=[0.25, 0.75])
    assert got.item() == pytest.approx(0.25 * 3.0 + 0.75 * 1.0)


def test_multi_level_passes_the_kind_through():
    s = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    t = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    for kind in ("mse", "attention", "normalized_mse"):
        expected = (
            feature_distillation_loss(s[0], t[0], kind)
            + feature_distillation_loss(s[1], t[1], kind)
        ) / 2
        got = multi_level_distillation_loss(s, [t], kind)
        assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_multi_level_edge_cases():
    assert multi_level_distillation_loss([E1], []).item() == 0.0
    with pytest.raises(ValueError, match="at least one feature layer"):
        multi_level_distillation_loss([], [[E1]])
    with pytest.raises(ValueError, match="Expected 2 teacher feature maps"):
        multi_level_distillation_loss([E1, E1], [[E1]])


def test_multi_level_rejects_teacher_weights_of_the_wrong_length():
    student, teachers = _two_teachers()
    with pytest.raises(ValueError, match="one weight per teacher"):
        multi_level_distillation_loss(student, teachers, teacher_weights=[1.0])


def test_own_slice_of_a_single_class_teacher_contributes_nothing():
    from avalanche_m2kd.losses import multi_model_distillation_loss, teacher_slices

    torch.manual_seed(0)
    student = torch.randn(5, 4)
    teachers = [torch.randn(5, 4), torch.randn(5, 4)]
    slices, weights = teacher_slices([[0, 1], [2]], [0, 1], "own")
    both = multi_model_distillation_loss(student, teachers, slices, weights, 2.0)
    base_only = multi_model_distillation_loss(student, teachers[:1], slices[:1], [weights[0]], 2.0)
    assert both.item() == pytest.approx(base_only.item(), abs=1e-7) and both.item() > 0


# ------------------------------------------------------------------- teacher sampling
def test_sample_teachers_is_uniform_and_the_estimate_unbiased():
    from avalanche_m2kd.losses import sample_teachers

    g = torch.Generator().manual_seed(0)
    losses = torch.tensor([0.5, 2.0, 1.0, 4.0])
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4])
    full = float((weights * losses).sum())
    counts = torch.zeros(4)
    estimates = []
    for _ in range(4000):
        chosen, scale = sample_teachers(4, 2, g)
        assert len(chosen) == 2 == len(set(chosen)) and scale == 2.0 and chosen == sorted(chosen)
        counts[chosen] += 1
        estimates.append(scale * float((weights[chosen] * losses[chosen]).sum()))
    assert torch.allclose(counts / 4000, torch.full((4,), 0.5), atol=0.03)
    assert sum(estimates) / len(estimates) == pytest.approx(full, rel=0.03)
    assert sample_teachers(3, 3) == ([0, 1, 2], 1.0) and sample_teachers(2, 7) == ([0, 1], 1.0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="teacher_sample"):
            sample_teachers(3, bad)
