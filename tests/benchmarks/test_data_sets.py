"""The harness's data-set registry: what a data set declares and how runs use it."""

from __future__ import annotations

import pytest

from benchmarks import compare, runs
from benchmarks.data_sets import DATA_SETS, MODULES, DataSet, register


def test_registry_holds_fashion_mnist_with_its_shape_and_error():
    from avalanche_m2kd.data.fmnist import FashionMNISTNotFoundError

    assert list(DATA_SETS) == ["fmnist"] and MODULES == ("fmnist",)
    data = DATA_SETS["fmnist"]
    assert (data.n_classes, data.image_shape, data.image_bytes) == (10, (1, 28, 28), 784)
    assert data.missing_error is FashionMNISTNotFoundError
    with pytest.raises(ValueError, match="already registered"):
        register(type(data)())


def test_runs_default_to_fashion_mnist_and_name_other_data_sets_in_record_paths(tmp_path):
    cfg = compare.parse(["run"])
    assert cfg.data_set == "fmnist" and runs.data_set_of(cfg) is DATA_SETS["fmnist"]
    old = runs.record_path(tmp_path, "memory", "m2kd", 613760, "2+1", 3, "permuted")
    assert old.name == "2p1_m2kd_m613760_s3_permuted.json"  # names of the committed records
    other = runs.record_path(tmp_path, "memory", "m2kd", 613760, "2+1", 3, "permuted", "digits")
    assert other.name == "digits_2p1_m2kd_m613760_s3_permuted.json"


def test_a_data_set_needs_its_benchmark_and_says_when_it_needs_no_preparation():
    class Bare(DataSet):
        name, n_classes, image_shape = "bare", 2, (3, 4, 4)

    with pytest.raises(NotImplementedError):
        Bare().benchmark("1x2", root=".", class_order=[0, 1], train_per_class=None,
                         test_per_class=None)
    with pytest.raises(NotImplementedError, match="bare needs no preparation"):
        Bare().prepare(".")
    assert Bare().image_bytes == 48
