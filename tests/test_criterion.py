"""Logit-adjusted cross-entropy: hand values, the running prior, and the bias it removes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avalanche_m2kd import LogitAdjustedCrossEntropy, M2KDStrategy
from avalanche_m2kd.criterion import logit_adjusted_cross_entropy


def test_adjusted_loss_by_hand():
    z = torch.tensor([[1.0, 2.0, 0.5]])
    prior = torch.tensor([0.5, 0.25, 0.25])
    shifted = [1.0 + math.log(0.5), 2.0 + math.log(0.25), 0.5 + math.log(0.25)]
    expected = -shifted[2] + math.log(sum(math.exp(v) for v in shifted))
    got = logit_adjusted_cross_entropy(z, torch.tensor([2]), prior)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # tau = 0 is plain cross-entropy; tau scales the shift.
    assert logit_adjusted_cross_entropy(
        z, torch.tensor([2]), prior, tau=0.0
    ).item() == pytest.approx(F.cross_entropy(z, torch.tensor([2])).item(), abs=1e-6)
    half = [1.0 + 0.5 * math.log(0.5), 2.0 + 0.5 * math.log(0.25), 0.5 + 0.5 * math.log(0.25)]
    expected_half = -half[2] + math.log(sum(math.exp(v) for v in half))
    assert logit_adjusted_cross_entropy(
        z, torch.tensor([2]), prior, tau=0.5
    ).item() == pytest.approx(expected_half, abs=1e-6)


def test_running_prior_restarts_on_a_new_class_and_follows_a_grown_head():
    crit = LogitAdjustedCrossEntropy(momentum=0.5)
    z3 = torch.zeros(4, 3, requires_grad=True)
    crit(z3, torch.tensor([0, 0, 1, 1]))
    assert crit.class_prior.tolist() == [0.5, 0.5, 0.0]
    crit(z3, torch.tensor([0, 0, 0, 0]))  # no new class: moving average
    assert crit.class_prior.tolist() == [0.75, 0.25, 0.0]
    z5 = torch.zeros(4, 5, requires_grad=True)  # the head grew, class 4 is new: restart
    crit(z5, torch.tensor([4, 4, 4, 0]))
    assert crit.class_prior.tolist() == [0.25, 0.0, 0.0, 0.0, 0.75]
    crit(z5, torch.tensor([1, 1, 1, 1]))  # class 1 was trained before: moving average
    assert crit.class_prior.tolist() == [0.125, 0.5, 0.0, 0.0, 0.375]
    crit.reset()
    assert crit.class_prior is None


def test_evaluation_is_plain_cross_entropy_and_leaves_the_prior_alone():
    crit = LogitAdjustedCrossEntropy()
    z = torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, 0, 0, 0, 0, 1])
    crit(z, y)
    prior = crit.class_prior.clone()
    with torch.no_grad():
        loss = crit(z, torch.tensor([3, 3, 3, 3, 3, 3]))
    assert loss.item() == pytest.approx(F.cross_entropy(z, torch.tensor([3] * 6)).item())
    assert torch.equal(crit.class_prior, prior)


@pytest.mark.parametrize("kwargs", [dict(tau=-1.0), dict(momentum=1.0), dict(momentum=-0.1)])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LogitAdjustedCrossEntropy(**kwargs)


def _train_on_imbalanced(criterion: nn.Module) -> float:
    """Fraction of a balanced test set predicted as the class that was rare in training."""
    g = torch.Generator().manual_seed(0)
    n_major, n_minor = 900, 100
    x = torch.cat(
        [torch.randn(n_major, 2, generator=g) + 1.0, torch.randn(n_minor, 2, generator=g) - 1.0]
    )
    y = torch.cat([torch.zeros(n_major, dtype=torch.long), torch.ones(n_minor, dtype=torch.long)])
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        criterion(model(x), y).backward()
        opt.step()
    x_test = torch.cat(
        [torch.randn(500, 2, generator=g) + 1.0, torch.randn(500, 2, generator=g) - 1.0]
    )
    with torch.no_grad():
        return (model(x_test).argmax(1) == 1).float().mean().item()


def test_adjustment_removes_the_bias_towards_the_frequent_class():
    plain = _train_on_imbalanced(nn.CrossEntropyLoss())
    adjusted = _train_on_imbalanced(LogitAdjustedCrossEntropy())
    # The classes are symmetric: a balanced classifier predicts the rare one about half the time.
    assert plain < 0.42
    assert abs(adjusted - 0.5) < 0.04
    assert abs(adjusted - 0.5) < abs(plain - 0.5) / 2


def test_strategy_replaces_only_plain_cross_entropy():
    def make(**kwargs):
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        return M2KDStrategy(net, torch.optim.SGD(net.parameters(), lr=0.1), **kwargs)

    assert isinstance(make()._criterion, LogitAdjustedCrossEntropy)
    assert make(logit_adjustment=0.5)._criterion.tau == 0.5
    assert type(make(logit_adjustment=0)._criterion) is nn.CrossEntropyLoss
    mine = LogitAdjustedCrossEntropy(tau=2.0)
    assert make(criterion=mine)._criterion is mine
    smoothed = nn.CrossEntropyLoss(label_smoothing=0.1)
    with pytest.warns(UserWarning, match="logit_adjustment=0"):
        assert make(criterion=smoothed)._criterion is smoothed
    with pytest.raises(ValueError, match="logit_adjustment"):
        make(logit_adjustment=-1.0)
