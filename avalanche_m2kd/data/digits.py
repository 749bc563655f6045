"""A class-incremental benchmark from scikit-learn's embedded digits (no download)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from avalanche.benchmarks import NCScenario

from avalanche_m2kd.data.tensors import TensorClassificationDataset  # also importable from here

__all__ = ["split_digits"]


def split_digits(
    n_experiences: int = 5,
    *,
    seed: int = 0,
    fixed_class_order: Sequence[int] | None = None,
    per_exp_classes: dict[int, int] | None = None,
    test_fraction: float = 0.3,
    flatten: bool = True,
) -> NCScenario:
    """Split digits: scikit-learn's 1,797 8x8 handwritten digits, class-incremental.

    Pixels are scaled to ``[0, 1]``; the train/test split is stratified and fixed
    by ``seed``; the class order is shuffled with ``seed`` unless given.

    Args:
        n_experiences: number of experiences (5 gives 2 classes each).
        seed: seed of the split and of the class order.
        fixed_class_order: explicit class order.
        per_exp_classes: Avalanche's ``{experience: n_classes}`` for uneven
            streams, e.g. ``{0: 2}`` with ``n_experiences=9`` (2, then 1 by 1).
        test_fraction: fraction of each class held out for the test stream.
        flatten: ``(64,)`` vectors if True, else ``(1, 8, 8)`` images.

    Returns:
        An Avalanche ``NCScenario`` without task labels.
    """
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    if not flatten:
        x = x.view(-1, 1, 8, 8)
    g = torch.Generator().manual_seed(seed)
    test = torch.zeros(len(y), dtype=torch.bool)
    for c in y.unique():
        idx = (y == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    return nc_benchmark(
        TensorClassificationDataset(x[~test], y[~test]),
        TensorClassificationDataset(x[test], y[test]),
        n_experiences=n_experiences,
        task_labels=False,
        seed=seed,
        fixed_class_order=fixed_class_order,
        per_exp_classes=per_exp_classes,
    )
