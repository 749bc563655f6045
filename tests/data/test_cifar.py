"""Split CIFAR-100: class orders, splits, the files path (with fake files) and offline errors.

No CIFAR-100 download happens here: the real-files path is exercised with tiny files in
torchvision's ``cifar-100-python`` format, and every network access is blocked.
"""

from __future__ import annotations

import pickle
import socket
import tarfile

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import calculate_md5

from avalanche_m2kd.data.cifar import (
    CIFAR100_CLASS_ORDERS,
    CIFAR100_MISSING_HINT,
    CIFAR100NotFoundError,
    cifar100_class_order,
    split_cifar100,
)
from avalanche_m2kd.data.digits import TensorClassificationDataset

# iCaRL's order as printed in ContinualAI/continual-learning-baselines
# experiments/split_cifar100/icarl.py (commit 1ec80ba4), ten per row.
ICARL_ORDER = [
    87, 0, 52, 58, 44, 91, 68, 97, 51, 15,
    94, 92, 10, 72, 49, 78, 61, 14, 8, 86,
    84, 96, 18, 24, 32, 45, 88, 11, 4, 67,
    69, 66, 77, 47, 79, 93, 29, 50, 57, 83,
    17, 81, 41, 12, 37, 59, 25, 20, 80, 73,
    1, 28, 6, 46, 62, 82, 53, 9, 31, 75,
    38, 63, 33, 74, 27, 22, 36, 3, 16, 21,
    60, 19, 70, 90, 89, 43, 5, 42, 65, 76,
    40, 30, 23, 85, 2, 95, 56, 48, 71, 64,
    98, 13, 99, 7, 34, 55, 54, 26, 35, 39,
]


def synthetic_cifar(n_classes: int = 100, per_class: int = 2, seed: int = 0):
    """CIFAR-shaped random images, ``per_class`` of each class (train), 1 each (test)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat(per_class)
    train = TensorClassificationDataset(torch.rand(len(y), 3, 32, 32, generator=g), y)
    test = TensorClassificationDataset(
        torch.rand(n_classes, 3, 32, 32, generator=g), torch.arange(n_classes)
    )
    return train, test


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection and name lookup fails, as on an offline machine."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---- class orders -----------------------------------------------------------------


def test_pycil_order_is_numpy_seed_1993():
    np.random.seed(1993)
    assert CIFAR100_CLASS_ORDERS["pycil"] == tuple(int(c) for c in np.random.permutation(100))
    assert CIFAR100_CLASS_ORDERS["pycil"][:5] == (68, 56, 78, 8, 23)


def test_icarl_order_is_the_baselines_order():
    assert list(CIFAR100_CLASS_ORDERS["icarl"]) == ICARL_ORDER
    assert CIFAR100_CLASS_ORDERS["icarl"][:8] == (87, 0, 52, 58, 44, 91, 68, 97)


@pytest.mark.parametrize("name", sorted(CIFAR100_CLASS_ORDERS))
def test_named_orders_are_permutations(name):
    order = cifar100_class_order(name)
    assert sorted(order) == list(range(100))
    assert all(type(c) is int for c in order)


def test_class_order_validation():
    assert cifar100_class_order(range(99, -1, -1))[:2] == (99, 98)
    with pytest.raises(ValueError, match="one of"):
        cifar100_class_order("seed1993")
    with pytest.raises(ValueError, match="permutation of 0..99"):
        cifar100_class_order([0, 1, 2])
    with pytest.raises(ValueError, match="permutation of 0..99"):
        cifar100_class_order([0] * 100)


# ---- splits (injected data, same code path as the files) ---------------------------


@pytest.mark.parametrize("name", sorted(CIFAR100_CLASS_ORDERS))
def test_b0_10_follows_the_order_and_remaps_labels(name):
    train, test = synthetic_cifar()
    bench = split_cifar100(10, class_order=name, train_dataset=train, test_dataset=test)
    order = CIFAR100_CLASS_ORDERS[name]
    assert list(bench.classes_order_original_ids) == list(order)
    assert bench.n_experiences == 10
    for t, exp in enumerate(bench.train_stream):
        assert exp.task_label == 0
        assert sorted(exp.classes_in_this_experience) == list(range(10 * t, 10 * t + 10))
        assert len(exp.dataset) == 20
        assert len(bench.test_stream[t].dataset) == 10
    x, _, task = bench.train_stream[0].dataset[0]
    assert x.shape == (3, 32, 32) and task == 0


def test_labels_are_positions_in_the_order():
    """An image of original class ``order[j]`` carries label ``j``."""
    train, test = synthetic_cifar()
    order = CIFAR100_CLASS_ORDERS["icarl"]
    bench = split_cifar100(
        10, class_order="icarl", train_dataset=train, test_dataset=test,
        train_transform=None, eval_transform=None,
    )
    for exp in bench.test_stream[:2]:
        for x, y, _ in exp.dataset:
            # test image j is class j
            original = next(j for j in range(100) if torch.equal(test.x[j], x))
            assert order[y] == original


@pytest.mark.parametrize(
    "n_experiences, first, sizes",
    [(6, 50, [50] + [10] * 5), (11, 50, [50] + [5] * 10), (2, 50, [50, 50]), (1, 100, [100])],
)
def test_base_experience_splits(n_experiences, first, sizes):
    train, test = synthetic_cifar()
    bench = split_cifar100(
        n_experiences, first_exp_classes=first, train_dataset=train, test_dataset=test
    )
    assert [len(e.classes_in_this_experience) for e in bench.train_stream] == sizes
    assert list(bench.classes_order_original_ids[:50]) == list(CIFAR100_CLASS_ORDERS["pycil"][:50])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_experiences=3), "divide the 100 classes"),
        (dict(n_experiences=7, first_exp_classes=50), "split evenly"),
        (dict(n_experiences=1, first_exp_classes=50), "split evenly"),
        (dict(n_experiences=2, first_exp_classes=0), "first_exp_classes"),
        (dict(n_experiences=0), "n_experiences"),
        (dict(n_experiences=10, max_train_per_class=0), "max_train_per_class"),
        (dict(n_experiences=10, class_order=[1, 2, 3]), "permutation of the dataset's classes"),
    ],
)
def test_bad_splits_fail_early(kwargs, match):
    train, test = synthetic_cifar()
    with pytest.raises(ValueError, match=match):
        split_cifar100(train_dataset=train, test_dataset=test, **kwargs)


def test_injection_needs_both_datasets():
    train, _ = synthetic_cifar()
    with pytest.raises(ValueError, match="both"):
        split_cifar100(train_dataset=train)


def test_named_order_is_restricted_to_the_classes_present():
    train, test = synthetic_cifar(n_classes=10, per_class=3)
    bench = split_cifar100(2, class_order="icarl", train_dataset=train, test_dataset=test)
    expected = [c for c in CIFAR100_CLASS_ORDERS["icarl"] if c < 10]
    assert list(bench.classes_order_original_ids) == expected
    assert [len(e.dataset) for e in bench.train_stream] == [15, 15]


def test_max_train_per_class_keeps_the_first_samples():
    train, test = synthetic_cifar(per_class=5)
    bench = split_cifar100(10, train_dataset=train, test_dataset=test, max_train_per_class=2)
    assert [len(e.dataset) for e in bench.train_stream] == [20] * 10
    assert [len(e.dataset) for e in bench.test_stream] == [10] * 10


def test_same_benchmark_as_avalanche_split_cifar100(monkeypatch):
    """With the same order, ours and Avalanche's SplitCIFAR100 split the data alike."""
    import avalanche.benchmarks.classic.ccifar100 as ccifar100

    train, test = synthetic_cifar()
    monkeypatch.setattr(ccifar100, "get_cifar100_dataset", lambda root: (train, test))
    order = list(CIFAR100_CLASS_ORDERS["icarl"])
    for ours, theirs in [
        (dict(n_experiences=10), dict(n_experiences=10)),
        (
            dict(n_experiences=6, first_exp_classes=50),
            dict(n_experiences=6, first_exp_with_half_classes=True),
        ),
    ]:
        a = split_cifar100(class_order="icarl", train_dataset=train, test_dataset=test, **ours)
        b = ccifar100.SplitCIFAR100(
            fixed_class_order=order, return_task_id=False, class_ids_from_zero_from_first_exp=True,
            train_transform=None, eval_transform=None, **theirs,
        )
        assert a.classes_order == b.classes_order
        for stream in ("train_stream", "test_stream"):
            for ea, eb in zip(getattr(a, stream), getattr(b, stream), strict=True):
                assert ea.classes_in_this_experience == eb.classes_in_this_experience
                assert len(ea.dataset) == len(eb.dataset)


# ---- files on disk (fake files in torchvision's format) ----------------------------


def _write_fake_cifar100(root, monkeypatch, per_class: int = 1) -> None:
    """A tiny cifar-100-python folder; torchvision's checksums patched to match it."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, k in (("train", per_class), ("test", 1)):
        labels = [c for _ in range(k) for c in range(100)]
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{c}" for c in range(100)]}, f)
    md5 = {name: calculate_md5(folder / name) for name in ("train", "test", "meta")}
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(
        CIFAR100, "meta", {"filename": "meta", "key": "fine_label_names", "md5": md5["meta"]}
    )


def test_files_on_disk_are_loaded_offline(tmp_path, monkeypatch, no_network):
    _write_fake_cifar100(tmp_path, monkeypatch, per_class=2)
    bench = split_cifar100(5, dataset_root=tmp_path, download=True)  # no download needed
    assert [len(e.dataset) for e in bench.train_stream] == [40] * 5
    assert [len(e.dataset) for e in bench.test_stream] == [20] * 5
    x, y, _ = bench.test_stream[0].dataset[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert x.min() < 0  # normalised by the default eval transform
    assert 0 <= y < 20


def test_official_archive_in_the_root_is_extracted(tmp_path, monkeypatch, no_network):
    _write_fake_cifar100(tmp_path, monkeypatch)
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-100-python", arcname="cifar-100-python")
    for f in (tmp_path / "cifar-100-python").iterdir():
        f.unlink()
    (tmp_path / "cifar-100-python").rmdir()
    monkeypatch.setattr(CIFAR100, "tgz_md5", calculate_md5(archive))
    bench = split_cifar100(10, dataset_root=tmp_path, download=False)
    assert len(bench.train_stream[0].dataset) == 10
    assert (tmp_path / "cifar-100-python" / "train").is_file()


def test_corrupt_files_give_a_clear_error(tmp_path, monkeypatch):
    _write_fake_cifar100(tmp_path, monkeypatch)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(CIFAR100NotFoundError, match="checksum"):
        split_cifar100(10, dataset_root=tmp_path, download=False)


# ---- missing files ------------------------------------------------------------------


def test_missing_files_without_download_never_touch_the_network(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("network used with download=False")

    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    root = tmp_path / "nowhere"
    with pytest.raises(CIFAR100NotFoundError) as info:
        split_cifar100(10, dataset_root=root, download=False)
    assert str(root) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_failed_download_is_explained_and_chained(tmp_path, no_network):
    root = tmp_path / "cifar"
    with pytest.raises(CIFAR100NotFoundError) as info:
        split_cifar100(10, dataset_root=root)
    message = str(info.value)
    assert message.startswith(CIFAR100_MISSING_HINT.format(root=root))
    assert str(root / "cifar-100-python") in message
    assert "download failed" in message and "network disabled by the test" in message
    assert info.value.__cause__ is not None
    assert socket.getdefaulttimeout() is None  # the short timeout was restored
