"""Class-incremental benchmarks used by the examples, tests and benchmarks."""

from avalanche_m2kd.data.cifar import (
    CIFAR100_CLASS_ORDERS,
    CIFAR100NotFoundError,
    cifar100_class_order,
    load_cifar100,
    split_cifar100,
)
from avalanche_m2kd.data.digits import TensorClassificationDataset, split_digits

__all__ = [
    "CIFAR100_CLASS_ORDERS",
    "CIFAR100NotFoundError",
    "TensorClassificationDataset",
    "cifar100_class_order",
    "load_cifar100",
    "split_cifar100",
    "split_digits",
]
