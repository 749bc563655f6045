"""Old-class / new-class accuracy from Avalanche's per-experience accuracies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["experience_accuracies", "old_new_accuracy"]


def experience_accuracies(
    results: Mapping[str, float], stream: str = "test_stream"
) -> dict[int, float]:
    """Per-experience top-1 accuracies from the dict returned by ``strategy.eval``.

    Reads Avalanche's ``Top1_Acc_Exp/eval_phase/<stream>/Task000/Exp<k>`` entries
    (``accuracy_metrics(experience=True)`` must be in the evaluator).
    """
    prefix = f"Top1_Acc_Exp/eval_phase/{stream}/"
    accs = {
        int(k.rsplit("Exp", 1)[1]): float(v) for k, v in results.items() if k.startswith(prefix)
    }
    if not accs:
        raise KeyError(
            f"No {prefix}... entries in the results: add "
            "accuracy_metrics(experience=True) to the EvaluationPlugin"
        )
    return accs


def old_new_accuracy(
    accuracies: Mapping[int, float], sizes: Sequence[int], current: int
) -> tuple[float | None, float]:
    """Accuracy on the old classes (experiences ``< current``) and the new ones.

    Old-class accuracy is the sample-weighted mean over the earlier experiences'
    test sets, i.e. the accuracy on the union of their samples.

    Args:
        accuracies: ``{experience: accuracy}`` (see :func:`experience_accuracies`).
        sizes: test-set size of every experience, by index.
        current: index of the experience just trained.

    Returns:
        ``(old, new)``; ``old`` is ``None`` at the first experience.

    Example:
        >>> old_new_accuracy({0: 0.5, 1: 1.0, 2: 0.9}, [10, 30, 20], current=2)
        (0.875, 0.9)
    """
    old_ids = [k for k in range(current) if k in accuracies]
    total = sum(sizes[k] for k in old_ids)
    old = sum(accuracies[k] * sizes[k] for k in old_ids) / total if total else None
    return old, accuracies[current]
