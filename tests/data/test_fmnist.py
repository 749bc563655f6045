"""Split Fashion-MNIST from local files: preparation, streams, equivalence with SplitFMNIST."""

from __future__ import annotations

import pytest
import torch

from avalanche_m2kd.data.fmnist import (
    FMNIST_FILES,
    FashionMNISTNotFoundError,
    fashion_mnist_ready,
    prepare_fashion_mnist,
    split_fmnist,
)


def test_prepare_unpacks_the_four_files_and_is_idempotent(fmnist_source, tmp_path):
    assert not fashion_mnist_ready(tmp_path)
    raw = prepare_fashion_mnist(tmp_path, fmnist_source)
    assert raw == tmp_path / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(FMNIST_FILES)  # no partial files left
    assert fashion_mnist_ready(tmp_path)
    stamp = (raw / FMNIST_FILES[0]).stat().st_mtime_ns
    prepare_fashion_mnist(tmp_path, fmnist_source)
    assert (raw / FMNIST_FILES[0]).stat().st_mtime_ns == stamp


def test_prepare_without_source_says_how_to_install(tmp_path):
    with pytest.raises(FashionMNISTNotFoundError, match="apt-get install dataset-fashion-mnist"):
        prepare_fashion_mnist(tmp_path / "root", tmp_path / "nothing-here")


def test_split_without_files_says_how_to_prepare(tmp_path):
    with pytest.raises(FashionMNISTNotFoundError, match="benchmarks.compare prepare"):
        split_fmnist("5x2", dataset_root=tmp_path)


@pytest.mark.parametrize(
    "stream, sizes",
    [("5x2", [2, 2, 2, 2, 2]), ("2+1", [2] + [1] * 8), ("2x5", [5, 5]), ("4+2", [4, 2, 2, 2])],
)
def test_streams(fmnist_root, stream, sizes):
    benchmark = split_fmnist(
        stream, dataset_root=fmnist_root, max_train_per_class=5, max_test_per_class=3
    )
    assert [len(e.classes_in_this_experience) for e in benchmark.train_stream] == sizes
    assert [len(e.dataset) for e in benchmark.train_stream] == [5 * n for n in sizes]
    assert [len(e.dataset) for e in benchmark.test_stream] == [3 * n for n in sizes]
    assert all(e.task_label == 0 for e in benchmark.train_stream)
    x, y, *_ = benchmark.train_stream[0].dataset[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32


@pytest.mark.parametrize("stream", ["3x3", "2+3", "x", "0+1"])
def test_bad_stream(fmnist_root, stream):
    with pytest.raises(ValueError, match="Expected `stream`"):
        split_fmnist(stream, dataset_root=fmnist_root)


def test_same_benchmark_as_avalanche_split_fmnist(fmnist_root):
    """Full data, 5x2: the same classes, samples and transforms as ``SplitFMNIST``."""
    from avalanche.benchmarks.classic import SplitFMNIST

    order = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]
    ours = split_fmnist("5x2", dataset_root=fmnist_root, class_order=order)
    theirs = SplitFMNIST(5, fixed_class_order=order, return_task_id=False,
                         class_ids_from_zero_from_first_exp=True, dataset_root=fmnist_root)
    for a, b in zip(ours.train_stream, theirs.train_stream, strict=True):
        assert a.classes_in_this_experience == b.classes_in_this_experience
        assert len(a.dataset) == len(b.dataset)
        xa, ya, *_ = a.dataset[3]
        xb, yb, *_ = b.dataset[3]
        assert ya == yb and torch.equal(xa, xb)


def _pil_path(stream, root, **kwargs):
    """The benchmark through torchvision's dataset and SplitFMNIST's per-image transforms."""
    from avalanche_m2kd._avalanche import fmnist_default_transforms

    train_transform, eval_transform = fmnist_default_transforms()
    return split_fmnist(stream, dataset_root=root, train_transform=train_transform,
                        eval_transform=eval_transform, **kwargs)


@pytest.mark.parametrize("stream, per_class", [("5x2", None), ("2+1", 7)])
def test_tensor_path_holds_the_same_samples_as_the_per_image_path(fmnist_root, stream, per_class):
    order = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]
    sizes = dict(class_order=order, max_train_per_class=per_class, max_test_per_class=per_class)
    ours = split_fmnist(stream, dataset_root=fmnist_root, **sizes)
    theirs = _pil_path(stream, fmnist_root, **sizes)
    for name in ("train_stream", "test_stream"):
        for a, b in zip(getattr(ours, name), getattr(theirs, name), strict=True):
            assert a.classes_in_this_experience == b.classes_in_this_experience
            xa, ya = zip(*[s[:2] for s in a.dataset], strict=True)
            xb, yb = zip(*[s[:2] for s in b.dataset], strict=True)
            assert ya == yb and torch.equal(torch.stack(xa), torch.stack(xb))  # bit for bit


def test_tensor_path_trains_to_the_same_weights(fmnist_root):
    from avalanche.training import Naive
    from torch import nn

    weights = []
    for build in (lambda: split_fmnist("2x5", dataset_root=fmnist_root),
                  lambda: _pil_path("2x5", fmnist_root)):
        benchmark = build()
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
        strategy = Naive(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                         train_mb_size=16, train_epochs=2, evaluator=None)
        for experience in benchmark.train_stream:
            strategy.train(experience, num_workers=0)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_read_idx_refuses_a_truncated_file(fmnist_root, tmp_path):
    from avalanche_m2kd.data.fmnist import read_idx

    raw = fmnist_root / "FashionMNIST" / "raw"
    labels = read_idx(raw / "train-labels-idx1-ubyte")
    assert labels.dtype == torch.uint8 and labels.shape == (120,)
    assert read_idx(raw / "train-images-idx3-ubyte").shape == (120, 28, 28)
    cut = tmp_path / "cut"
    cut.write_bytes((raw / "train-images-idx3-ubyte").read_bytes()[:-1])
    with pytest.raises(ValueError, match="unpack it again"):
        read_idx(cut)
    cut.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="unsigned-byte idx file"):
        read_idx(cut)
