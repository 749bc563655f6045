"""Class-incremental benchmarks used by the examples, tests and benchmarks."""

from avalanche_m2kd.data.cifar import (
    CIFAR100_CLASS_ORDERS,
    CIFAR100NotFoundError,
    cifar100_class_order,
    load_cifar100,
    split_cifar100,
)
from avalanche_m2kd.data.digits import split_digits
from avalanche_m2kd.data.fmnist import (
    FashionMNISTNotFoundError,
    fashion_mnist_ready,
    fashion_mnist_tensors,
    prepare_fashion_mnist,
    split_fmnist,
)
from avalanche_m2kd.data.tensors import TensorClassificationDataset

__all__ = [
    "CIFAR100_CLASS_ORDERS",
    "CIFAR100NotFoundError",
    "FashionMNISTNotFoundError",
    "TensorClassificationDataset",
    "cifar100_class_order",
    "fashion_mnist_ready",
    "fashion_mnist_tensors",
    "load_cifar100",
    "prepare_fashion_mnist",
    "split_cifar100",
    "split_digits",
    "split_fmnist",
]
