"""Re-estimating BatchNorm running statistics for the weights a model has now.

A model whose weights changed after its statistics were accumulated (pruning zeroes
a share of every layer; the statistics were those of the dense model) normalises
with stale running means and variances in eval mode. :func:`recalibrate_batch_norm`
replaces them by the exact average over the given batches, computed with the
current weights; nothing else in the model changes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["batch_norm_layers", "recalibrate_batch_norm", "running_stats"]


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def running_stats(m: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor, Tensor]:
    """``running_mean``, ``running_var`` and ``num_batches_tracked`` of a layer that
    tracks them (the only ones :func:`batch_norm_layers` returns)."""
    mean, var, count = m.running_mean, m.running_var, m.num_batches_tracked
    assert mean is not None and var is not None and count is not None
    return mean, var, count


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Recompute the running statistics of every BatchNorm layer on ``batches``.

    The statistics are reset and re-accumulated as a cumulative (equal-weight)
    average over the batches (``momentum=None``), each layer normalising in
    training mode as it does during training; every other module runs in eval mode
    (no dropout) and no parameter changes. Layers' modes and momenta are restored.

    Args:
        model: the network; its BatchNorm running statistics are overwritten.
        batches: input tensors, already on the model's device.

    Returns:
        The number of batches used (0 leaves the statistics untouched).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        >>> x = torch.randn(64, 3)
        >>> recalibrate_batch_norm(net, [x[:32], x[32:]])
        2
        >>> torch.allclose(net[1].running_mean, net[0](x).mean(0), atol=1e-6)
        True
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in layers]
    snapshot = [tuple(t.clone() for t in running_stats(m)) for m in layers]
    n = 0
    try:
        model.eval()
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts equally
            m.train()
        for x in batches:
            model(x)
            n += 1
    finally:
        for module, training in modes:
            module.training = training
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
    if n == 0:  # nothing seen: keep the statistics as they were
        for m, saved in zip(layers, snapshot, strict=True):
            for t, s in zip(running_stats(m), saved, strict=True):
                t.copy_(s)
    return n
