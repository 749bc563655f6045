"""Classification data held in tensors: the dataset Avalanche's benchmarks are built on.

A :class:`TensorClassificationDataset` hands out rows of a tensor already decoded and
normalised, so that no per-image work is left for a ``DataLoader`` but indexing and
collation (Split digits and, with its default transforms, Split Fashion-MNIST).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["TensorClassificationDataset", "first_per_class"]


class TensorClassificationDataset(Dataset):
    """``(x, y)`` pairs from two tensors, with the ``targets`` list Avalanche reads.

    Args:
        x: the inputs, one row per sample.
        y: the class labels (integers), one per row of ``x``.

    Example:
        >>> data = TensorClassificationDataset(torch.zeros(3, 2), torch.tensor([1, 0, 1]))
        >>> len(data), data.targets, data[2][1]
        (3, [1, 0, 1], 1)
    """

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x = x
        self.targets = [int(t) for t in y]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.x[i], self.targets[i]


def first_per_class(labels: Tensor, k: int | None) -> Tensor:
    """Indices of the first ``k`` samples of each class, in their order in ``labels``
    (all of them if ``k`` is ``None``).

    Example:
        >>> first_per_class(torch.tensor([2, 0, 2, 2, 0, 1]), 2).tolist()
        [0, 1, 2, 4, 5]
    """
    if k is None:
        return torch.arange(len(labels))
    if k < 1:
        raise ValueError(f"Expected `k` to be a positive int or None, but got {k}")
    rank = torch.zeros(len(labels), dtype=torch.long)  # position of each sample within its class
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        rank[members] = torch.arange(len(members))
    return (rank < k).nonzero().squeeze(1)
