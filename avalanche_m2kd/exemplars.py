"""Herding exemplar selection on the model's penultimate features."""

from __future__ import annotations

from typing import Optional

import torch
from avalanche.training.storage_policy import HerdingSelectionStrategy, ParametricBuffer
from torch.utils.data import DataLoader

from avalanche_m2kd.features import INPUT_SUFFIX, FeatureCapture, find_head

__all__ = ["ClassBalancedBuffer", "HeadInputHerding"]


class HeadInputHerding(HerdingSelectionStrategy):
    """iCaRL's herding, on the input of the classifier head of the *current* model.

    Avalanche's ``HerdingSelectionStrategy`` needs the name of a layer whose output
    is the feature vector and keeps the model it was built with. This one finds
    the head of ``strategy.model`` at each call (so it follows model adaptation
    and wrapping), uses the head's input (the penultimate features of any
    classifier), and computes features with the evaluation transforms. The
    greedy selection itself is Avalanche's.

    Args:
        head_name: dotted name of the head; found automatically when ``None``.
    """

    def __init__(self, head_name: Optional[str] = None) -> None:  # noqa: D107
        self.head_name = head_name  # no feature extractor: built per call

    @torch.no_grad()
    def make_sorted_indices(self, strategy, data) -> list[int]:
        model = strategy.model
        spec = find_head(model, self.head_name) + INPUT_SUFFIX
        was_training = model.training
        model.eval()
        data = data.eval() if hasattr(data, "eval") else data
        collate_fn = getattr(data, "collate_fn", None)
        chunks = []
        try:
            with FeatureCapture(model, [spec]) as capture:
                for x, *_ in DataLoader(data, batch_size=strategy.eval_mb_size, collate_fn=collate_fn):
                    model(x.to(strategy.device))
                    chunks.append(capture.features[spec].flatten(1))
        finally:
            model.train(was_training)
        return self.make_sorted_indices_from_features(torch.cat(chunks))


class ClassBalancedBuffer(ParametricBuffer):
    """Avalanche's ``ParametricBuffer(groupby="class")`` that keeps the stream's sample format.

    Avalanche 0.6.0 splits the data by class with a *task-aware* subset, which adds a
    task label to every buffered sample. On streams whose samples carry none (those of
    ``class_incremental_benchmark``) the replayed ``(x, y, t)`` and the current
    ``(x, y)`` then cannot be collated into one mini-batch ("each element in list of
    batch should be of equal size"). Here each class group is a plain subset of the
    experience's dataset, so buffered samples look exactly like the current ones.
    Selection within a class is the given strategy (herding for M2KD).

    Args:
        max_size: total number of exemplars, shared equally by the seen classes.
        selection_strategy: Avalanche exemplar selection; random when ``None``.
    """

    def __init__(self, max_size: int, selection_strategy=None) -> None:  # noqa: D107
        super().__init__(max_size, groupby="class", selection_strategy=selection_strategy)

    def _split_by_class(self, data):
        groups: dict[int, list[int]] = {}
        for idx, target in enumerate(data.targets):
            groups.setdefault(int(target), []).append(idx)
        return {c: data.subset(idxs) for c, idxs in groups.items()}
