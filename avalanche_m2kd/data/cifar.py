"""Split CIFAR-100 with the class orders of the literature, and a clear error offline.

Two published class orders are provided (:data:`CIFAR100_CLASS_ORDERS`):

* ``"pycil"`` — PyCIL / FACIL's "seed 1993" order, ``numpy.random.seed(1993);
  numpy.random.permutation(100)`` (68, 56, 78, 8, 23, ...). Hard-coded here; a test
  checks it against numpy.
* ``"icarl"`` — the order of the original iCaRL code, as used by Avalanche's
  continual-learning-baselines (``experiments/split_cifar100/icarl.py``, commit
  1ec80ba4) and PODNet (87, 0, 52, 58, 44, ...).

Avalanche's ``SplitCIFAR100(seed=1993)`` shuffles with torch's RNG and gives
*neither* order; :func:`split_cifar100` always passes an explicit order.

The files are torchvision's ``cifar-100-python`` folder under the dataset root. When
they are missing, the official archive is extracted if it lies in the root, then (if
allowed) downloaded once with a short network timeout; if that fails too,
:class:`CIFAR100NotFoundError` says where the files were looked for and what to do.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from avalanche.benchmarks import NCScenario
from torch.utils.data import Dataset
from torchvision import transforms

__all__ = [
    "CIFAR100_CLASS_ORDERS",
    "CIFAR100_EVAL_TRANSFORM",
    "CIFAR100_MISSING_HINT",
    "CIFAR100_TRAIN_TRANSFORM",
    "CIFAR100NotFoundError",
    "ClassSubset",
    "cifar100_class_order",
    "load_cifar100",
    "split_cifar100",
]

#: Published CIFAR-100 class orders, by name.
CIFAR100_CLASS_ORDERS: dict[str, tuple[int, ...]] = {
    # numpy.random.seed(1993); numpy.random.permutation(100) — PyCIL, FACIL.
    "pycil": (
        68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38,
        58, 70, 77, 1, 85, 19, 17, 50, 28, 53, 13, 81, 45, 82, 6, 59, 83, 16, 15, 44,
        91, 41, 72, 60, 79, 52, 20, 10, 31, 54, 37, 95, 14, 71, 96, 98, 97, 2, 64, 66,
        42, 22, 35, 86, 24, 34, 87, 21, 99, 0, 88, 27, 18, 94, 11, 12, 47, 25, 30, 46,
        62, 69, 36, 61, 7, 63, 75, 5, 32, 4, 51, 48, 73, 93, 39, 67, 29, 49, 57, 33,
    ),
    # iCaRL's order, from ContinualAI/continual-learning-baselines
    # experiments/split_cifar100/icarl.py (`fixed_class_order`), commit 1ec80ba4.
    "icarl": (
        87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86,
        84, 96, 18, 24, 32, 45, 88, 11, 4, 67, 69, 66, 77, 47, 79, 93, 29, 50, 57, 83,
        17, 81, 41, 12, 37, 59, 25, 20, 80, 73, 1, 28, 6, 46, 62, 82, 53, 9, 31, 75,
        38, 63, 33, 74, 27, 22, 36, 3, 16, 21, 60, 19, 70, 90, 89, 43, 5, 42, 65, 76,
        40, 30, 23, 85, 2, 95, 56, 48, 71, 64, 98, 13, 99, 7, 34, 55, 54, 26, 35, 39,
    ),
}

#: Message of :class:`CIFAR100NotFoundError`; ``{root}`` is the folder searched.
CIFAR100_MISSING_HINT = (
    "CIFAR-100 was not found under {root} (looked for the torchvision folder "
    "{root}/cifar-100-python with its files 'train', 'test' and 'meta', and for the "
    "archive {root}/cifar-100-python.tar.gz), and it could not be downloaded. "
    "Download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "and extract it under {root} (or just place the .tar.gz there), or point "
    "`dataset_root` (--data-root in the examples) at a folder that holds cifar-100-python/."
)

_DOWNLOAD_TIMEOUT_S = 10.0  # ours: one short download attempt, never a long hang offline


class CIFAR100NotFoundError(FileNotFoundError):
    """CIFAR-100's files are neither on disk nor downloadable; the message says what to do."""


class _ToTensorIfNeeded:
    """``transforms.ToTensor`` for PIL images and arrays; tensors pass through.

    Lets the same default transforms serve torchvision's CIFAR-100 (PIL images) and
    injected tensor datasets, so tests run the very transforms real runs use.
    """

    def __init__(self) -> None:
        self._to_tensor = transforms.ToTensor()

    def __call__(self, x: Any) -> torch.Tensor:
        return x if isinstance(x, torch.Tensor) else self._to_tensor(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)  # Avalanche's SplitCIFAR100 defaults
_CIFAR100_STD = (0.2673, 0.2564, 0.2762)

#: The training transform, Avalanche's ``SplitCIFAR100`` default (random crop with 4-pixel
#: padding, horizontal flip, normalisation), accepting tensors as well as PIL images.
CIFAR100_TRAIN_TRANSFORM = transforms.Compose(
    [
        _ToTensorIfNeeded(),
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.Normalize(_CIFAR100_MEAN, _CIFAR100_STD),
    ]
)

#: The evaluation transform, Avalanche's ``SplitCIFAR100`` default (normalisation only).
CIFAR100_EVAL_TRANSFORM = transforms.Compose(
    [_ToTensorIfNeeded(), transforms.Normalize(_CIFAR100_MEAN, _CIFAR100_STD)]
)


def cifar100_class_order(class_order: str | Sequence[int] = "pycil") -> tuple[int, ...]:
    """A CIFAR-100 class order, by name or as given, checked to be a permutation of 0..99.

    Args:
        class_order: ``"pycil"``, ``"icarl"`` or a sequence of the 100 class ids.

    Returns:
        The order as a tuple of 100 ints.

    Raises:
        ValueError: an unknown name, or a sequence that is not a permutation of 0..99.

    Example:
        >>> cifar100_class_order("icarl")[:5]
        (87, 0, 52, 58, 44)
    """
    order = _named_or_given_order(class_order)
    if sorted(order) != list(range(100)):
        raise ValueError(
            "Expected argument `class_order` to be a permutation of 0..99, but got "
            f"{len(order)} ids ({len(set(order))} distinct, range {min(order, default=None)}"
            f"..{max(order, default=None)})"
        )
    return order


def _named_or_given_order(class_order: str | Sequence[int]) -> tuple[int, ...]:
    if isinstance(class_order, str):
        try:
            return CIFAR100_CLASS_ORDERS[class_order]
        except KeyError:
            raise ValueError(
                f"Expected argument `class_order` to be one of {sorted(CIFAR100_CLASS_ORDERS)} "
                f"or a sequence of class ids, but got {class_order!r}"
            ) from None
    return tuple(int(c) for c in class_order)


def _has_files(root: Path) -> bool:
    folder = root / "cifar-100-python"
    return all((folder / name).is_file() for name in ("train", "test", "meta"))


def load_cifar100(
    dataset_root: str | Path | None = None,
    *,
    download: bool = True,
    timeout: float = _DOWNLOAD_TIMEOUT_S,
) -> tuple[Dataset, Dataset]:
    """torchvision's CIFAR-100 train and test sets, or a :class:`CIFAR100NotFoundError`.

    Order of attempts: the extracted ``cifar-100-python`` folder under the root; the
    official archive ``cifar-100-python.tar.gz`` in the root (extracted, offline);
    then, if ``download``, one download with socket timeout ``timeout``.

    Args:
        dataset_root: folder holding ``cifar-100-python/``; ``None`` is Avalanche's
            default location (``~/.avalanche/data/cifar100``).
        download: allow one download attempt when the files are missing.
        timeout: socket timeout of the download attempt, seconds.

    Returns:
        ``(train, test)``: ``torchvision.datasets.CIFAR100`` instances without transforms.

    Raises:
        CIFAR100NotFoundError: the files are missing or corrupt and the download was
            not allowed or failed (the network error is chained as ``__cause__``).
    """
    from torchvision.datasets import CIFAR100
    from torchvision.datasets.utils import check_integrity, extract_archive

    if dataset_root is None:
        from avalanche.benchmarks.datasets import default_dataset_location

        dataset_root = default_dataset_location("cifar100")
    root = Path(dataset_root).expanduser()
    hint = CIFAR100_MISSING_HINT.format(root=root)

    if not _has_files(root):
        archive = root / CIFAR100.filename
        if archive.is_file() and check_integrity(str(archive), CIFAR100.tgz_md5):
            extract_archive(str(archive), str(root))
        elif download:
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(timeout)
            try:
                root.mkdir(parents=True, exist_ok=True)
                CIFAR100(str(root), train=True, download=True)
            except Exception as exc:  # URLError, OSError, checksum RuntimeError, ...
                raise CIFAR100NotFoundError(
                    f"{hint} (download failed: {type(exc).__name__}: {exc})"
                ) from exc
            finally:
                socket.setdefaulttimeout(previous)
        else:
            raise CIFAR100NotFoundError(f"{hint} (download=False)")
    try:
        return CIFAR100(str(root), train=True), CIFAR100(str(root), train=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
        raise CIFAR100NotFoundError(
            f"{hint} (files under {root / 'cifar-100-python'} failed torchvision's "
            f"checksum: {exc}; delete them and extract the archive again)"
        ) from exc


class ClassSubset(Dataset):
    """The first ``k`` samples of each class of a dataset, with a ``targets`` list."""

    def __init__(self, dataset: Dataset, k: int) -> None:
        counts: dict[int, int] = {}
        self.indices: list[int] = []
        for i, t in enumerate(_targets(dataset)):
            if counts.get(t, 0) < k:
                counts[t] = counts.get(t, 0) + 1
                self.indices.append(i)
        self.dataset = dataset
        all_targets = _targets(dataset)
        self.targets = [all_targets[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]


def _targets(dataset: Dataset) -> list[int]:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ValueError(
            f"Expected a dataset with a `targets` list (as torchvision's and Avalanche's "
            f"have), but {type(dataset).__name__} has none"
        )
    return [int(t) for t in targets]


def split_cifar100(
    n_experiences: int = 10,
    *,
    first_exp_classes: int | None = None,
    class_order: str | Sequence[int] = "pycil",
    dataset_root: str | Path | None = None,
    download: bool = True,
    train_dataset: Dataset | None = None,
    test_dataset: Dataset | None = None,
    max_train_per_class: int | None = None,
    remap_class_ids: bool = True,
    train_transform: Callable | None = CIFAR100_TRAIN_TRANSFORM,
    eval_transform: Callable | None = CIFAR100_EVAL_TRANSFORM,
) -> NCScenario:
    """Class-incremental Split CIFAR-100 in a published class order, without task labels.

    The same benchmark as Avalanche's ``SplitCIFAR100(n_experiences,
    fixed_class_order=order, return_task_id=False,
    class_ids_from_zero_from_first_exp=remap_class_ids)`` — built, as that
    function does, with ``nc_benchmark`` — plus a base experience of any size
    (``first_exp_classes``; Avalanche only offers 50) and a clear error offline.

    Common settings (``n_experiences`` counts every experience, the base one
    included, as in Avalanche):

    ============  =====================================================
    B0/10 steps   ``split_cifar100(10)`` (10 classes each)
    B0/5, B0/20   ``split_cifar100(5)``, ``split_cifar100(20)``
    B50/5 steps   ``split_cifar100(6, first_exp_classes=50)`` (then 10 each)
    B50/10 steps  ``split_cifar100(11, first_exp_classes=50)`` (then 5 each)
    ============  =====================================================

    Passing ``train_dataset`` and ``test_dataset`` builds the benchmark from them
    instead of the files (e.g. a small synthetic CIFAR-shaped set in tests); the
    rest of the code path is the same. Their classes may be any subset of 0..99: a
    named order is then restricted to the classes present, keeping its sequence.

    Args:
        n_experiences: number of experiences, the base one included.
        first_exp_classes: classes of the first experience; the others share the
            rest equally. ``None``: all experiences are equal.
        class_order: ``"pycil"`` (default), ``"icarl"`` (see
            :data:`CIFAR100_CLASS_ORDERS`) or an explicit sequence of class ids.
        dataset_root: folder holding ``cifar-100-python/`` (see :func:`load_cifar100`).
        download: allow one short download attempt when the files are missing.
        train_dataset: injected training set (a dataset with a ``targets`` list);
            needs ``test_dataset`` too.
        test_dataset: injected test set.
        max_train_per_class: keep only the first ``k`` training samples of each
            class (quick runs); ``None`` keeps all.
        remap_class_ids: relabel classes by their position in the order (the
            ``k``-th class of the order becomes label ``k``), so the seen classes are
            always the first units of the head. Default True (ours: needed by heads
            that grow, such as Avalanche's ``IncrementalClassifier``).
        train_transform: transform of training samples; default: Avalanche's
            CIFAR-100 augmentation (also accepts tensors).
        eval_transform: transform of test samples; default: normalisation.

    Returns:
        An Avalanche ``NCScenario`` whose experiences have task label 0.

    Raises:
        CIFAR100NotFoundError: the files are missing and could not be downloaded.
        ValueError: a bad order, split or dataset.
    """
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark

    _split_arg_validation(n_experiences, max_train_per_class, train_dataset, test_dataset)
    order = _benchmark_order(train_dataset, class_order)
    per_exp_classes = _per_exp_classes(len(order), n_experiences, first_exp_classes)
    if train_dataset is None:  # the order and split are checked before any download
        train_dataset, test_dataset = load_cifar100(dataset_root, download=download)
    if max_train_per_class is not None:
        train_dataset = ClassSubset(train_dataset, max_train_per_class)

    return nc_benchmark(
        train_dataset=train_dataset,
        test_dataset=test_dataset,
        n_experiences=n_experiences,
        task_labels=False,
        shuffle=False,
        fixed_class_order=list(order),
        per_exp_classes=per_exp_classes,
        class_ids_from_zero_from_first_exp=remap_class_ids,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )


def _split_arg_validation(
    n_experiences: int,
    max_train_per_class: int | None,
    train_dataset: Dataset | None,
    test_dataset: Dataset | None,
) -> None:
    """The checks of :func:`split_cifar100`'s arguments that need no class order."""
    if (train_dataset is None) != (test_dataset is None):
        raise ValueError("Expected both `train_dataset` and `test_dataset`, or neither")
    _int_at_least_1("n_experiences", n_experiences)
    if max_train_per_class is not None:
        _int_at_least_1("max_train_per_class", max_train_per_class)


def _int_at_least_1(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected argument `{name}` to be an int >= 1, but got {value!r}")


def _benchmark_order(
    train_dataset: Dataset | None, class_order: str | Sequence[int]
) -> tuple[int, ...]:
    """The benchmark's class order: over CIFAR-100's classes, or restricted to those of
    an injected ``train_dataset``."""
    if train_dataset is None:
        return cifar100_class_order(class_order)
    return _order_for(sorted(set(_targets(train_dataset))), class_order)


def _order_for(present: list[int], class_order: str | Sequence[int]) -> tuple[int, ...]:
    """The class order for an injected dataset whose classes are ``present``."""
    if isinstance(class_order, str):
        full = cifar100_class_order(class_order)
        missing = sorted(set(present) - set(full))
        if missing:
            raise ValueError(
                f"The injected dataset has classes outside CIFAR-100's 0..99 ({missing[:10]}); "
                "pass an explicit `class_order`"
            )
        kept = set(present)
        return tuple(c for c in full if c in kept)
    order = _named_or_given_order(class_order)
    if sorted(order) != present:
        raise ValueError(
            "Expected argument `class_order` to be a permutation of the dataset's classes "
            f"{present[:10]}{'...' if len(present) > 10 else ''} ({len(present)} classes), "
            f"but got {len(order)} ids"
        )
    return order


def _per_exp_classes(
    n_classes: int, n_experiences: int, first_exp_classes: int | None
) -> dict[int, int] | None:
    """Avalanche's ``per_exp_classes`` for a base experience, after checking the split."""
    if first_exp_classes is None:
        if n_classes % n_experiences:
            raise ValueError(
                f"Expected argument `n_experiences` to divide the {n_classes} classes, but "
                f"got {n_experiences}; use `first_exp_classes` for an uneven first experience"
            )
        return None
    if (
        isinstance(first_exp_classes, bool)
        or not isinstance(first_exp_classes, int)
        or not 1 <= first_exp_classes <= n_classes
    ):
        raise ValueError(
            f"Expected argument `first_exp_classes` to be an int in [1, {n_classes}], "
            f"but got {first_exp_classes!r}"
        )
    rest, steps = n_classes - first_exp_classes, n_experiences - 1
    if steps == 0 and rest != 0 or steps > 0 and (rest == 0 or rest % steps):
        raise ValueError(
            f"Expected the {rest} classes after the first experience to split evenly into "
            f"the other {steps} experience(s) (n_experiences={n_experiences}, "
            f"first_exp_classes={first_exp_classes})"
        )
    return {0: first_exp_classes}
