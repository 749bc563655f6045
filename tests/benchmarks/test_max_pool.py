"""The harness CNN's 2x2 max-pooling: nn.MaxPool2d's values without gradients, its kernel
with them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from benchmarks.backbones import make_backbone
from benchmarks.max_pool import MaxPool2x2, max_pool_2x2


@pytest.mark.parametrize("shape", [(3, 5, 28, 28), (2, 64, 14, 14), (1, 1, 2, 2), (4, 2, 6, 10)])
def test_the_same_values_as_max_pool2d_ties_and_infinities_included(shape):
    x = torch.randn(*shape).relu()  # many zero windows: ties
    x.view(-1)[::7] = float("-inf")
    assert torch.equal(max_pool_2x2(x), nn.functional.max_pool2d(x, 2))
    # NaN spreads as max_pool2d spreads it
    x.view(-1)[3] = float("nan")
    assert torch.equal(max_pool_2x2(x).isnan(), nn.functional.max_pool2d(x, 2).isnan())


def test_the_module_trains_with_max_pool2d_and_evaluates_with_the_strided_maximum(monkeypatch):
    calls = []
    monkeypatch.setattr("benchmarks.max_pool.max_pool_2x2",
                        lambda x: calls.append(x.shape) or nn.functional.max_pool2d(x, 2))
    pool = MaxPool2x2()
    x = torch.randn(2, 3, 8, 8).relu().requires_grad_(True)
    grad = torch.randn(2, 3, 4, 4)
    ours = torch.autograd.grad(pool(x), x, grad)[0]
    theirs = torch.autograd.grad(nn.MaxPool2d(2)(x), x, grad)[0]
    assert torch.equal(ours, theirs) and calls == []  # gradients: max_pool2d's kernel
    with torch.no_grad():
        pool(x)
    pool(x.detach())
    pool(torch.randn(1, 1, 7, 7))  # odd: max_pool2d's kernel (floor)
    assert calls == [(2, 3, 8, 8)] * 2
    assert isinstance(pool, nn.MaxPool2d) and pool.state_dict() == {}


def test_the_cnn_pools_with_it_and_evaluates_as_with_nn_max_pool2d():
    model = make_backbone("cnn", width=4, incremental_head=False).eval()
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 2 and all(type(m) is MaxPool2x2 for m in pools)
    plain = copy.deepcopy(model)
    for stage in ("stage1", "stage2"):
        getattr(plain.feature_extractor, stage)[3] = nn.MaxPool2d(2)
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
