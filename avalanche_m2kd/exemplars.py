"""Herding exemplar selection on the model's penultimate features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.training.storage_policy import (
    ExemplarsSelectionStrategy,
    HerdingSelectionStrategy,
    ParametricBuffer,
)
from avalanche.training.templates import SupervisedTemplate
from torch.utils.data import DataLoader

from avalanche_m2kd._avalanche import ParametricSingleBuffer
from avalanche_m2kd.features import INPUT_SUFFIX, FeatureCapture, find_head

__all__ = ["ClassBalancedBuffer", "HeadInputHerding"]

# Data attribute of buffered samples: their index in their experience's dataset.
_SOURCE_INDEX = "m2kd_source_index"


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

    def __init__(self, head_name: str | None = None) -> None:  # noqa: D107
        self.head_name = head_name  # no feature extractor: built per call

    @torch.no_grad()
    def make_sorted_indices(
        self, strategy: SupervisedTemplate, data: AvalancheDataset
    ) -> list[int]:
        """Herding order of ``data``'s samples (best first); ``[]`` for no samples.

        A class group is empty once the memory has fewer slots than there are
        classes and the class got none (Avalanche's share rule gives the
        remainder slots to some classes only); it stays empty at every later
        resize, so an empty ``data`` is an ordinary case, not an error.
        """
        if len(data) == 0:
            return []
        model = strategy.model
        spec = find_head(model, self.head_name) + INPUT_SUFFIX
        was_training = model.training
        model.eval()
        data = data.eval() if hasattr(data, "eval") else data
        collate_fn = getattr(data, "collate_fn", None)
        chunks = []
        try:
            with FeatureCapture(model, [spec]) as capture:
                loader = DataLoader(data, batch_size=strategy.eval_mb_size, collate_fn=collate_fn)
                for x, *_ in loader:
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

    Each buffered sample also carries its index in its experience's dataset (a data
    attribute, not part of the sample), so :meth:`state_dict` is a few integers per
    exemplar and :meth:`load_state_dict` rebuilds the same buffer from the stream.

    The memory is shared out as Avalanche's ``ParametricBuffer`` does: with ``n``
    classes seen, every class gets ``max_size // n`` slots and the first
    ``max_size % n`` classes in the iteration order of ``seen_groups`` one more
    (a class with fewer samples keeps them all). So the buffer never holds more
    than ``max_size`` exemplars and its class sizes differ by at most one, except
    where a class had fewer samples. A memory smaller than the number of classes
    leaves some classes with **zero** exemplars; their groups stay, empty, and
    training goes on with the others.

    Args:
        max_size: total number of exemplars, shared by the seen classes.
        selection_strategy: Avalanche exemplar selection; random when ``None``.
    """

    def __init__(  # noqa: D107
        self, max_size: int, selection_strategy: ExemplarsSelectionStrategy | None = None
    ) -> None:
        super().__init__(max_size, groupby="class", selection_strategy=selection_strategy)
        self.class_experience: dict[int, int] = {}
        self._seen_order: list[int] = []  # insertion order of ``seen_groups`` (a set)

    def post_adapt(self, agent: SupervisedTemplate, exp: Any) -> None:
        """Add ``exp``'s classes and shrink every class group to its share."""
        for c in exp.classes_in_this_experience:
            self.class_experience[int(c)] = exp.current_experience
        super().post_adapt(agent, exp)

    def _split_by_class(self, data: AvalancheDataset) -> dict[int, AvalancheDataset]:
        data = data.update_data_attribute(_SOURCE_INDEX, list(range(len(data))))
        groups: dict[int, list[int]] = {}
        for idx, target in enumerate(data.targets):
            groups.setdefault(int(target), []).append(idx)
        self._seen_order += [c for c in groups if c not in self.seen_groups]
        return {c: data.subset(idxs) for c, idxs in groups.items()}

    def state_dict(self) -> dict[str, Any]:
        """Which samples are buffered: per class, its experience and indices in it.

        Only plain Python values (``torch.load(weights_only=True)`` reads them);
        the samples themselves come back from the stream in :meth:`load_state_dict`.
        """
        groups = {}
        for c, group in self.buffer_groups.items():
            groups[int(c)] = {
                "experience": self.class_experience[int(c)],
                "indices": [int(i) for i in getattr(group.buffer, _SOURCE_INDEX)],
                "max_size": int(group.max_size),
            }
        return {"max_size": int(self.max_size), "seen": list(self._seen_order), "groups": groups}

    def load_state_dict(self, state: dict[str, Any], datasets: Sequence[AvalancheDataset]) -> None:
        """Rebuild the buffer of :meth:`state_dict` from the experiences' datasets.

        Args:
            state: what :meth:`state_dict` returned.
            datasets: ``datasets[e]`` is ``stream[e].dataset`` of the training
                stream, for every experience trained so far.

        Raises:
            ValueError: the state names an experience or index the given datasets
                do not have, or a sample whose class is not the group's (the
                stream is not the one the buffer was filled from).
        """
        if state["max_size"] != self.max_size:
            raise ValueError(
                f"The saved buffer holds {state['max_size']} exemplars, this one "
                f"{self.max_size}: build it with the same memory size"
            )
        self.buffer_groups = {}
        self.class_experience = {}
        for c, group in state["groups"].items():
            e, idxs = group["experience"], list(group["indices"])
            if e >= len(datasets) or (idxs and max(idxs) >= len(datasets[e])):
                raise ValueError(
                    f"The saved buffer refers to sample {max(idxs, default=0)} of "
                    f"experience {e}, which the given stream does not have: resume "
                    "with the stream the run was started on"
                )
            data = datasets[e].update_data_attribute(_SOURCE_INDEX, list(range(len(datasets[e]))))
            subset = data.subset(idxs)
            if any(int(t) != int(c) for t in subset.targets):
                raise ValueError(
                    f"The saved exemplars of class {c} are not of class {c} in experience "
                    f"{e} of the given stream: resume with the stream the run was started on"
                )
            single = ParametricSingleBuffer(group["max_size"], self.selection_strategy)
            single.buffer = subset
            self.buffer_groups[int(c)] = single
            self.class_experience[int(c)] = e
        # Same insertions in the same order: the set iterates as the saved one did,
        # so later experiences share the memory out among the classes identically.
        self._seen_order = [int(c) for c in state["seen"]]
        self.seen_groups = set()
        for c in self._seen_order:
            self.seen_groups.add(c)

