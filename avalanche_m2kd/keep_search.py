"""How much of its free weights an experience must keep: the measuring behind
:class:`~avalanche_m2kd.pruning.FaithfulKeep`.

A pruned model is judged as it will be used: its BatchNorm running statistics are
re-estimated for the pruned weights (:func:`~avalanche_m2kd.batchnorm.recalibrate_batch_norm`),
then it is evaluated in eval mode, on the experience's training mini-batches, against
the dense model, whose statistics are re-estimated on the same mini-batches. Nothing
here changes the live model: every candidate is a copy.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence

import torch
from torch import Tensor, nn

from avalanche_m2kd.batchnorm import recalibrate_batch_norm
from avalanche_m2kd.pruning import prune_free_weights

__all__ = ["KeepSearch", "accuracy_on", "smallest_faithful_keep"]

#: One mini-batch: inputs and targets, on the model's device.
Batch = tuple[Tensor, Tensor]


def _predict(model: nn.Module, x: Tensor, seen: Tensor | None) -> Tensor:
    out = model(x)
    if seen is None:
        return out.argmax(dim=1)
    seen = seen.to(out.device)
    return seen[out[:, seen].argmax(dim=1)]


@torch.no_grad()
def accuracy_on(
    model: nn.Module,
    batches: Sequence[Batch],
    classes: Collection[int],
    seen: Collection[int] | None = None,
) -> float:
    """Eval-mode accuracy of ``model`` on the samples of ``batches`` whose target is
    in ``classes`` (all samples when none is), predicting among the ``seen`` classes
    only (as :class:`~avalanche_m2kd.plugins.SeenClassesMaskingPlugin` does; ``None``:
    every output); the model's mode is restored.

    Example:
        >>> net = nn.Linear(2, 3, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 1])
        >>> accuracy_on(net, [(x, y)], classes=[1], seen=[0, 1])
        0.5
        >>> accuracy_on(net, [(x, y)], classes=[1])  # unit 2, never trained, wins
        0.0
    """
    training = model.training
    model.eval()
    try:
        hits = total = 0
        wanted = torch.tensor(sorted(classes), dtype=torch.long)
        among = None if seen is None else torch.tensor(sorted(seen), dtype=torch.long)
        for x, y in batches:
            own = torch.isin(y, wanted.to(y.device))
            if not bool(own.any()):
                continue
            hits += int((_predict(model, x[own], among) == y[own]).sum())
            total += int(own.sum())
        if total == 0:  # no sample of these classes: judge on every sample
            for x, y in batches:
                hits += int((_predict(model, x, among) == y).sum())
                total += int(y.numel())
        return hits / max(total, 1)
    finally:
        model.train(training)


class KeepSearch:
    """What :func:`smallest_faithful_keep` measured: the keep it chose, the dense
    model's accuracy and each tried keep's accuracy (smallest first)."""

    def __init__(self, keep: float, dense: float, tried: list[tuple[float, float]]) -> None:
        self.keep, self.dense, self.tried = keep, dense, tried

    def as_dict(self) -> dict[str, object]:
        """Plain values, for a log or a checkpoint."""
        return {"keep": self.keep, "dense": self.dense, "tried": [list(t) for t in self.tried]}

    def __repr__(self) -> str:
        tried = ", ".join(f"{k:.4f}: {a:.3f}" for k, a in self.tried)
        return f"KeepSearch(keep={self.keep:.4f}, dense={self.dense:.3f}, tried={{{tried}}})"


@torch.no_grad()
def smallest_faithful_keep(
    model: nn.Module,
    owners: Mapping[str, Tensor],
    owner_value: int,
    keeps: Sequence[float],
    batches: Sequence[Batch],
    classes: Collection[int],
    max_drop: float,
    seen: Collection[int] | None = None,
) -> KeepSearch:
    """The smallest of ``keeps`` whose pruned model loses at most ``max_drop``
    accuracy on ``classes`` against the dense ``model``; the last of ``keeps`` when
    none does (it is not measured).

    Each candidate prunes a copy of ``model`` as the nested store would
    (:func:`~avalanche_m2kd.pruning.prune_free_weights` on every layer of ``owners``:
    the largest-magnitude ``keep`` fraction of the free weights kept, the rest zero),
    re-estimates its BatchNorm statistics on ``batches`` and is evaluated on them
    (:func:`accuracy_on`). ``model`` itself is not changed.

    Args:
        model: the live model, dense (its free weights trained).
        owners: the owner indices of each prunable layer (parameter name to tensor).
        owner_value: the owner the pruning will give (``1 + experience``).
        keeps: the fractions to try, smallest first.
        batches: the experience's training mini-batches, on the model's device.
        classes: the experience's own classes.
        max_drop: the accuracy a candidate may lose.
        seen: the classes predicted among (:func:`accuracy_on`).

    Returns:
        A :class:`KeepSearch`.
    """
    if not keeps:
        raise ValueError("Expected at least one keep fraction to try, but got none")
    inputs = [x for x, _ in batches]
    dense = copy.deepcopy(model)
    recalibrate_batch_norm(dense, inputs)
    reference = accuracy_on(dense, batches, classes, seen)
    tried: list[tuple[float, float]] = []
    for keep in keeps[:-1]:
        candidate = copy.deepcopy(model)
        params = dict(candidate.named_parameters())
        for name, owner in owners.items():
            weight = params[name]
            _, released = prune_free_weights(weight, owner.to(weight.device), owner_value, keep)
            weight.masked_fill_(released, 0.0)
        recalibrate_batch_norm(candidate, inputs)
        accuracy = accuracy_on(candidate, batches, classes, seen)
        tried.append((keep, accuracy))
        if reference - accuracy <= max_drop:
            return KeepSearch(keep, reference, tried)
    return KeepSearch(keeps[-1], reference, tried)
