"""Split Fashion-MNIST from local files (Debian's ``dataset-fashion-mnist``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avalanche_m2kd.data.fmnist import (
    DEBIAN_FASHION_MNIST,
    FashionMNISTNotFoundError,
    prepare_fashion_mnist,
    split_fmnist,
)
from benchmarks.data_sets.base import DataSet, register

__all__ = ["FashionMNIST"]


class FashionMNIST(DataSet):
    """Fashion-MNIST: 10 classes of 1x28x28 images (784 bytes each as uint8), through
    :func:`avalanche_m2kd.data.split_fmnist` (the images decoded and normalised once)."""

    name = "fmnist"
    n_classes = 10
    image_shape = (1, 28, 28)
    missing_error = FashionMNISTNotFoundError

    def benchmark(self, stream: str, *, root: str | Path, class_order: list[int],  # noqa: D102
                  train_per_class: int | None, test_per_class: int | None) -> Any:
        return split_fmnist(stream, dataset_root=root, class_order=class_order,
                            max_train_per_class=train_per_class,
                            max_test_per_class=test_per_class)

    def prepare(self, root: str | Path, source: str | Path | None = None) -> Path:  # noqa: D102
        return prepare_fashion_mnist(root, source or DEBIAN_FASHION_MNIST)


register(FashionMNIST())
