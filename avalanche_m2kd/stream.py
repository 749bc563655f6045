"""What M2KD needs to know about an Avalanche stream, and its class-incremental check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["check_class_incremental", "experience_classes", "probe_input", "stream_length"]


def experience_classes(experience: Any) -> list[int]:
    """Sorted class ids present in an Avalanche training experience."""
    classes = getattr(experience, "classes_in_this_experience", None)
    if classes is None:
        raise ValueError(
            f"{type(experience).__name__} has no `classes_in_this_experience`: M2KD needs "
            "a supervised class-incremental stream (nc_benchmark, "
            "class_incremental_benchmark, SplitMNIST, SplitCIFAR100, ...)"
        )
    return sorted(int(c) for c in classes)


def check_class_incremental(experience: Any, learned: Sequence[Sequence[int]]) -> list[int]:
    """Check that ``experience`` continues a class-incremental stream.

    Args:
        experience: the experience about to be trained.
        learned: the classes introduced by each experience already learned.

    Returns:
        The experience's class ids.

    Before the first experience (``learned`` empty), every experience of the stream
    it comes from (``experience.origin_stream``) is checked for task labels, so a
    stream whose later experiences carry them fails before any training.

    Raises:
        ValueError: the experience (or, before the first one, any experience of
            its stream) carries task labels, or the experience brings classes that
            an earlier experience already introduced.
    """
    _check_no_task_labels(experience)
    if not learned:
        for other in _stream_experiences(experience):
            _check_no_task_labels(other)
    classes = experience_classes(experience)
    for k, old in enumerate(learned):
        repeated = sorted(set(classes) & set(old))
        if repeated:
            raise ValueError(
                f"Classes {repeated} of experience "
                f"{getattr(experience, 'current_experience', len(learned))} were already "
                f"introduced by experience {k}: the stream is not class-incremental. M2KD "
                "needs each class in exactly one experience (nc_benchmark / "
                "class_incremental_benchmark); to train again on a stream, build a new "
                "strategy"
            )
    return classes


def _check_no_task_labels(experience: Any) -> None:
    task_labels = [int(t) for t in getattr(experience, "task_labels", [0])]
    if any(t != 0 for t in task_labels):
        raise ValueError(
            f"Experience {getattr(experience, 'current_experience', '?')} has task labels "
            f"{task_labels}: M2KD is class-incremental (one head, no task id at test time). "
            "Build the benchmark without task labels (e.g. return_task_id=False, "
            "task_labels=False)"
        )


def _stream_experiences(experience: Any) -> list[Any]:
    """The experiences of ``experience``'s stream; none when it has no finite stream."""
    stream = getattr(experience, "origin_stream", None)
    try:
        n = len(stream)  # type: ignore[arg-type]
        return [stream[i] for i in range(n)]  # type: ignore[index]
    except Exception:  # no stream, or one without a length (online, generators)
        return []


def probe_input(experience: Any, device: Any = "cpu") -> Any | None:
    """The experience's first input as a batch of one, on ``device`` (``None``: empty)."""
    import torch

    dataset = getattr(experience, "dataset", None)
    if dataset is None or len(dataset) == 0:
        return None
    x = dataset[0][0]
    return x.unsqueeze(0).to(device) if isinstance(x, torch.Tensor) else None


def stream_length(experience: Any) -> int | None:
    """Number of experiences in the stream ``experience`` comes from, if known.

    That is the benchmark's whole stream even when the experience was taken from a
    slice (``train_stream[2:]``, as a resumed run does), whose own length is shorter.
    """
    stream = getattr(experience, "origin_stream", None)
    benchmark, name = getattr(stream, "benchmark", None), getattr(stream, "name", None)
    full = getattr(benchmark, f"{name}_stream", None) if benchmark is not None and name else None
    for candidate in (full, stream):
        if candidate is None:
            continue
        try:
            return len(candidate)
        except Exception:  # streams without a length (online, generators)
            continue
    return None
