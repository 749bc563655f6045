"""Class-incremental benchmarks used by the examples, tests and benchmarks."""

from avalanche_m2kd.data.digits import TensorClassificationDataset, split_digits

__all__ = ["TensorClassificationDataset", "split_digits"]
