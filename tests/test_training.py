"""TrainingMixin in front of Avalanche's own Naive: mixed precision and the finite-loss check."""

from __future__ import annotations

import warnings

import pytest
import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

from avalanche_m2kd import TrainingMixin


class _RobustNaive(TrainingMixin, Naive):
    pass


def _naive(mlp, **options):
    model = mlp()
    return model, _RobustNaive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                               criterion=torch.nn.CrossEntropyLoss(), train_mb_size=32,
                               evaluator=EvaluationPlugin(loggers=[]), **options)


def test_naive_with_the_mixin_refuses_a_nan_loss_before_the_update(digits, mlp):
    model, strategy = _naive(mlp)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FloatingPointError, match="already non-finite"):
        strategy.train(digits.train_stream[0])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) or k == "0.weight" for k in before)
    assert torch.equal(before["0.weight"].nan_to_num(), after["0.weight"].nan_to_num())


class _Dtypes(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.inside, self.outputs = [], []

    def after_forward(self, strategy, **kwargs):
        self.outputs.append(strategy.mb_output.dtype)


def test_naive_with_the_mixin_trains_under_bf16_autocast(digits, mlp):
    spy = _Dtypes()
    _, strategy = _naive(mlp, mixed_precision=torch.bfloat16, plugins=[spy])
    forward = strategy._forward

    def spied():
        spy.inside.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return forward()

    strategy._forward = spied
    strategy.train(digits.train_stream[0])
    assert spy.inside and set(spy.inside) == {torch.bfloat16}
    assert set(spy.outputs) == {torch.float32}  # returned as float32: losses in full precision
    _, plain = _naive(mlp)
    assert plain.grad_scaler is None and plain.mixed_precision is None


def test_mixin_float16_has_a_grad_scaler_and_bad_dtype_is_refused(mlp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler warns without CUDA
        _, strategy = _naive(mlp, mixed_precision=torch.float16)
    assert isinstance(strategy.grad_scaler, torch.amp.GradScaler)
    with pytest.raises(ValueError, match="`mixed_precision`"):
        _naive(mlp, mixed_precision=torch.float64)
