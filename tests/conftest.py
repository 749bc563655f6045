"""Shared fixtures: small real-data benchmarks and models, all CPU and offline."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

warnings.filterwarnings("ignore", message="no QP solver")


def _conv_net(n_classes: int = 10, head: nn.Module | None = None) -> nn.Module:
    """A small conv net with BatchNorm for 1x8x8 digits."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        head if head is not None else nn.Linear(16, n_classes),
    )


def _mlp(n_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, n_classes)
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits():
    from avalanche_m2kd.data import split_digits

    return split_digits(5, seed=0)


@pytest.fixture(scope="session")
def digits_images():
    from avalanche_m2kd.data import split_digits

    return split_digits(5, seed=0, flatten=False)


@pytest.fixture
def conv_net():
    """Factory of a small conv net with BatchNorm for 1x8x8 digits."""
    return _conv_net


@pytest.fixture
def mlp():
    """Factory of a 64-128-128-10 MLP for flattened digits."""
    return _mlp
