"""Shared fixtures: small real-data benchmarks and models, all CPU and offline."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import Phase, settings
from torch import nn

warnings.filterwarnings("ignore", message="no QP solver")

# Hypothesis profiles (tests/test_properties.py). "m2kd", the default: fixed seed, few
# examples, no example database (nothing written into the checkout), so the file
# stays under about two minutes on one thread. "thorough"
# (`--hypothesis-profile=thorough`): random, many examples, for a long run.
settings.register_profile(
    "m2kd", derandomize=True, max_examples=30, deadline=None, database=None,
    phases=[Phase.explicit, Phase.generate],  # a failure prints its (unshrunk) example at once
)
settings.register_profile("thorough", max_examples=1000, deadline=None, print_blob=True)
settings.load_profile("m2kd")


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


def _differences(a, b, path: str = "") -> list[str]:
    """Where two nested dicts / lists / tuples of tensors and plain values differ
    (tensors: dtype and values exactly; containers: type, keys, length)."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if same else [path]
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return [f"{path} (keys)"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            return [f"{path} (type or length)"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [path]


def _identical(a, b) -> bool:
    """Exact equality of nested dicts / lists / tuples of tensors and plain values."""
    return not _differences(a, b)


@pytest.fixture
def identical():
    """Exact equality of nested containers of tensors (dtype and values)."""
    return _identical


@pytest.fixture
def differences():
    """The paths where two nested containers of tensors differ (empty: identical)."""
    return _differences


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load_example(name: str):
    """Import ``examples/<name>.py`` as a module (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_example():
    """``load_example("resumable")``: the example script imported as a module."""
    return _load_example


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


def _write_idx(path, array) -> None:
    """An idx file (the MNIST format): magic, big-endian dimensions, uint8 data."""
    import gzip
    import struct

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture(scope="session")
def fmnist_source(tmp_path_factory):
    """A tiny Fashion-MNIST-shaped set as Debian ships it: the four gzipped idx files.

    12 training and 6 test images of each of the 10 classes, 28x28, random pixels
    whose mean depends on the class (so a model can learn something).
    """
    import numpy as np

    rng = np.random.default_rng(0)
    source = tmp_path_factory.mktemp("fmnist-source")
    for split, per_class in (("train", 12), ("t10k", 6)):
        labels = np.tile(np.arange(10), per_class)
        images = rng.integers(0, 60, size=(len(labels), 28, 28)) + 18 * labels[:, None, None]
        _write_idx(source / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(source / f"{split}-labels-idx1-ubyte.gz", labels)
    return source


@pytest.fixture(scope="session")
def fmnist_root(fmnist_source, tmp_path_factory):
    """A dataset root with the tiny set unpacked where ``SplitFMNIST`` reads it."""
    from avalanche_m2kd.data.fmnist import prepare_fashion_mnist

    root = tmp_path_factory.mktemp("fmnist-root")
    prepare_fashion_mnist(root, fmnist_source)
    return root
