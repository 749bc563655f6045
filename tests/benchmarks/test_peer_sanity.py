"""Sanity checks of the harness's peers against what their papers promise, on Split digits
(scikit-learn's embedded 8x8 digits: real data, no download, seconds on a CPU).

* BiC (Wu et al., CVPR 2019): a model trained incrementally with replay is biased
  towards the newest classes, and the bias layer, fitted on a class-balanced
  validation split, moves predictions back to the old ones: after correction the
  old-class accuracy is higher, the new-class accuracy lower, and the final accuracy
  higher than without it (``stage_2_epochs=0`` leaves the layer at the identity).
* Replay methods: more memory does not lower the final accuracy beyond a tolerance.
"""

from __future__ import annotations

import pytest
import torch
from avalanche.training.plugins import SupervisedPlugin

from avalanche_m2kd.data.digits import split_digits
from avalanche_m2kd.metrics import experience_accuracies, old_new_accuracy
from benchmarks.methods import METHODS, Setting, seed_everything


def _stream(seed: int):
    """2 classes, then one at a time (the 2+1 protocol, where BiC's bias is largest)."""
    return split_digits(9, seed=seed, per_exp_classes={0: 2}, flatten=False)


def _final(method: str, n_exemplars: int, seed: int, options: dict | None = None):
    """Final accuracy, old- and new-class accuracy after the last experience."""
    scenario = _stream(seed)
    structure = tuple(
        tuple(sorted(int(c) for c in exp.classes_in_this_experience))
        for exp in scenario.train_stream
    )
    setting = Setting(
        n_classes=sum(len(c) for c in structure),
        experience_classes=structure,
        image_shape=(1, 8, 8),
        width=16,
        batch_size=16,
        epochs=4,
    )
    seed_everything(seed)
    strategy = METHODS[method].build(n_exemplars, setting, options)
    for exp in scenario.train_stream:
        strategy.train(exp, num_workers=0)
    # evaluated through the strategy: BiC's bias layer corrects its outputs there
    accs = experience_accuracies(strategy.eval(scenario.test_stream, num_workers=0))
    sizes = [len(exp.dataset) for exp in scenario.test_stream]
    last = len(sizes) - 1
    old_acc, new_acc = old_new_accuracy(accs, sizes, last)
    total = sum(accs[k] * n for k, n in enumerate(sizes)) / sum(sizes)
    return total, old_acc, new_acc


@pytest.fixture(scope="module")
def bic_runs():
    """``{(seed, stage_2_epochs): (final, old, new)}``; 0 epochs: no correction."""
    return {(s, e): _final("bic", 60, s, {"stage_2_epochs": e}) for s in (0, 1) for e in (200, 0)}


@pytest.mark.parametrize("seed", [0, 1])
def test_bic_correction_moves_predictions_from_new_to_old_classes(bic_runs, seed):
    corrected, uncorrected = bic_runs[seed, 200], bic_runs[seed, 0]
    # uncorrected, the model is biased towards the newest class (BiC's premise)
    assert uncorrected[2] > uncorrected[1] + 0.3
    # the bias layer gives old classes back more than the new class loses
    assert corrected[1] > uncorrected[1] + 0.05
    assert corrected[2] <= uncorrected[2]
    assert corrected[0] > uncorrected[0] + 0.05


@pytest.mark.parametrize("method", ["replay", "bic"])
def test_more_memory_does_not_lower_final_accuracy(method):
    small, large = _final(method, 20, 0)[0], _final(method, 100, 0)[0]
    assert large >= small - 0.02, (small, large)


def test_bic_union_sampling_draws_from_new_data_and_memory_together():
    scenario = _stream(0)
    structure = tuple(
        tuple(sorted(int(c) for c in exp.classes_in_this_experience))
        for exp in scenario.train_stream
    )
    setting = Setting(n_classes=10, experience_classes=structure, image_shape=(1, 8, 8),
                      width=4, batch_size=16, epochs=1)
    strategy = METHODS["bic"].build(30, setting, {"sampling": "union", "stage_2_epochs": 1})
    seen: list = []  # (loader, its dataset's expected length) of each training epoch

    class Loaders(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            buffer = strategy.plugins[0].storage_policy.buffer
            seen.append((strategy.dataloader, len(strategy.adapted_dataset) + len(buffer)))

    strategy.plugins.append(Loaders())
    strategy.train(scenario.train_stream[0], num_workers=0)
    strategy.train(scenario.train_stream[1], num_workers=0)
    (_, _), (loader, expected) = seen  # the first experience has no memory yet
    assert isinstance(loader, torch.utils.data.DataLoader)
    assert loader.batch_size == 2 * setting.batch_size
    assert len(loader.dataset) == expected > len(scenario.train_stream[1].dataset)
    with pytest.raises(ValueError, match="sampling"):
        METHODS["bic"].build(30, setting, {"sampling": "balanced"})
