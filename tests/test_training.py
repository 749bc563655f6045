"""TrainingMixin in front of Avalanche's own Naive: torchrun, mixed precision and the
finite-loss check."""

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
        enabled = torch.is_autocast_enabled("cpu")
        spy.inside.append(torch.get_autocast_dtype("cpu") if enabled else None)
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


_DDP_SCRIPT = '''
import sys
import torch
from avalanche.distributed import DistributedHelper
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from torch.nn.parallel import DistributedDataParallel
from avalanche_m2kd import TrainingMixin
from avalanche_m2kd.data import split_digits

class RobustNaive(TrainingMixin, Naive):
    pass

class Wrapped(SupervisedPlugin, supports_distributed=True):
    seen = []
    def after_forward(self, strategy, **kwargs):
        self.seen.append(isinstance(strategy._ddp, DistributedDataParallel))

DistributedHelper.init_distributed(random_seed=0, use_cuda=False)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                            torch.nn.Linear(32, 10))
strategy = RobustNaive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                       train_mb_size=16, criterion=torch.nn.CrossEntropyLoss(),
                       evaluator=EvaluationPlugin(loggers=[]), plugins=[Wrapped()],
                       mixed_precision=torch.bfloat16)
strategy.train(split_digits(5, seed=0).train_stream[0])
torch.save({"wrapped": Wrapped.seen, "state": model.state_dict()},
           f"{sys.argv[1]}/rank{DistributedHelper.rank}.pt")
'''


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs gloo",
)
def test_naive_with_the_mixin_trains_under_torchrun_with_identical_ranks(tmp_path):
    """Avalanche's Naive alone never wraps the model in DDP under torchrun; with the mixin
    every training forward goes through DistributedDataParallel (under bf16 autocast), and
    the two ranks end with the same weights and BatchNorm statistics."""
    import os
    import subprocess
    import sys

    script = tmp_path / "naive_ddp.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["wrapped"] and all(rank0["wrapped"]) and all(rank1["wrapped"])
    assert rank0["state"].keys() == rank1["state"].keys()
    assert all(torch.equal(rank0["state"][k], rank1["state"][k]) for k in rank0["state"])
