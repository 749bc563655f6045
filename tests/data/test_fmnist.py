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
