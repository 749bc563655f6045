"""Split Fashion-MNIST offline: Avalanche's ``SplitFMNIST`` data, subsampled and uneven streams.

Fashion-MNIST's four idx files are what torchvision (and so Avalanche's
``SplitFMNIST``) reads from ``<root>/FashionMNIST/raw/``. With no network, Debian's
``dataset-fashion-mnist`` package is a source: it installs the gzipped originals in
``/usr/share/datasets/fashion-mnist/``. :func:`prepare_fashion_mnist` unpacks them
where torchvision looks (the ``.gz`` files alone are not enough: torchvision would
try to download them again), and :func:`split_fmnist` builds the class-incremental
benchmark the same way ``SplitFMNIST`` does (Avalanche's dataset loader, its
default transforms, ``nc_benchmark``) with two additions the CPU comparison needs:
a per-class subsample and an uneven first experience (``2 + 1 x 8``).
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avalanche.benchmarks import NCScenario
from torch.utils.data import Dataset

from avalanche_m2kd._avalanche import fmnist_default_transforms
from avalanche_m2kd.data.cifar import ClassSubset

__all__ = [
    "DEBIAN_FASHION_MNIST",
    "FMNIST_FILES",
    "FashionMNISTNotFoundError",
    "fashion_mnist_ready",
    "prepare_fashion_mnist",
    "split_fmnist",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the gzipped idx files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

#: The four idx files torchvision's ``FashionMNIST`` reads, unpacked.
FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class FashionMNISTNotFoundError(FileNotFoundError):
    """Fashion-MNIST's files are not where they are needed; the message says what to do."""


def _raw(root: str | Path) -> Path:
    return Path(root).expanduser() / "FashionMNIST" / "raw"


def fashion_mnist_ready(root: str | Path) -> bool:
    """Whether ``<root>/FashionMNIST/raw/`` holds the four unpacked idx files."""
    raw = _raw(root)
    return all((raw / name).is_file() for name in FMNIST_FILES)


def prepare_fashion_mnist(
    root: str | Path, source: str | Path = DEBIAN_FASHION_MNIST
) -> Path:
    """Unpack the gzipped idx files from ``source`` into ``<root>/FashionMNIST/raw/``.

    Files already unpacked are kept. The write goes through a temporary name, so an
    interrupted call never leaves a truncated file that looks complete.

    Args:
        root: the dataset root later given to :func:`split_fmnist` / ``SplitFMNIST``.
        source: folder with ``<name>.gz`` for each of :data:`FMNIST_FILES`.

    Returns:
        The ``raw`` folder.

    Raises:
        FashionMNISTNotFoundError: a source file is missing (with the command that
            installs it).
    """
    raw = _raw(root)
    source = Path(source)
    missing = [
        n for n in FMNIST_FILES if not (raw / n).is_file() and not (source / f"{n}.gz").is_file()
    ]
    if missing:
        raise FashionMNISTNotFoundError(
            f"Fashion-MNIST files {[f'{n}.gz' for n in missing]} are not in {source}. "
            "Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or "
            "download the four idx .gz files from "
            "https://github.com/zalandoresearch/fashion-mnist and pass their folder as "
            "the source (--source)"
        )
    raw.mkdir(parents=True, exist_ok=True)
    for name in FMNIST_FILES:
        target = raw / name
        if target.is_file():
            continue
        partial = target.with_suffix(".partial")
        with gzip.open(source / f"{name}.gz", "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.replace(target)
    return raw


def _stream_split(stream: str, n_classes: int = 10) -> tuple[int, dict[int, int] | None]:
    """``n_experiences`` and ``per_exp_classes`` of a stream name ``"5x2"`` or ``"2+1"``."""
    try:
        if "x" in stream:
            n_exp, per = (int(v) for v in stream.split("x"))
            if n_exp * per == n_classes:
                return n_exp, None
        elif "+" in stream:
            base, step = (int(v) for v in stream.split("+"))
            if 0 < base < n_classes and (n_classes - base) % step == 0:
                return 1 + (n_classes - base) // step, {0: base}
    except ValueError:
        pass
    raise ValueError(
        f"Expected `stream` as '<experiences>x<classes>' covering the {n_classes} classes "
        f"(e.g. '5x2') or '<base>+<step>' (e.g. '2+1': 2 classes, then 1 by 1), but got {stream!r}"
    )


def split_fmnist(
    stream: str = "5x2",
    *,
    dataset_root: str | Path,
    class_order: Sequence[int] | None = None,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
    train_transform: Any = "default",
    eval_transform: Any = "default",
) -> NCScenario:
    """Class-incremental Split Fashion-MNIST, without task labels, from local files.

    Built exactly as Avalanche's ``SplitFMNIST`` builds it (``get_fmnist_dataset``,
    ``SplitFMNIST``'s default transforms, ``nc_benchmark`` with
    ``class_ids_from_zero_from_first_exp``), plus:

    * ``stream="2+1"``: 2 base classes, then one class per experience (9 experiences,
      8 of them adding a teacher); ``"5x2"`` is ``SplitFMNIST(5)``.
    * ``max_train_per_class`` / ``max_test_per_class``: the first ``k`` samples of each
      class (in file order), for runs sized to a CPU.

    Args:
        stream: ``"<experiences>x<classes>"`` or ``"<base>+<step>"``.
        dataset_root: folder holding ``FashionMNIST/raw/`` (see
            :func:`prepare_fashion_mnist`).
        class_order: order of the 10 classes; default ``0, 1, ..., 9``.
        max_train_per_class: training samples kept per class; ``None`` keeps 6,000.
        max_test_per_class: test samples kept per class; ``None`` keeps 1,000.
        train_transform, eval_transform: ``"default"`` is ``SplitFMNIST``'s
            (``ToTensor`` + normalisation); anything else is passed to Avalanche.

    Returns:
        An Avalanche ``NCScenario`` (labels remapped to the order's positions).

    Raises:
        FashionMNISTNotFoundError: the unpacked files are missing (never downloads).
        ValueError: a bad stream or class order.
    """
    from avalanche.benchmarks.datasets.external_datasets.fmnist import get_fmnist_dataset
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark

    n_experiences, per_exp_classes = _stream_split(stream)
    order = list(range(10)) if class_order is None else [int(c) for c in class_order]
    if sorted(order) != list(range(10)):
        raise ValueError(f"Expected `class_order` to be a permutation of 0..9, but got {order}")
    if not fashion_mnist_ready(dataset_root):
        raise FashionMNISTNotFoundError(
            f"Fashion-MNIST is not unpacked under {_raw(dataset_root)} (expected "
            f"{', '.join(FMNIST_FILES)}). Unpack Debian's dataset-fashion-mnist files "
            "there with `python -c \"from avalanche_m2kd.data import prepare_fashion_mnist; "
            f"prepare_fashion_mnist('{dataset_root}')\"` (from a clone: `python -m "
            f"benchmarks.compare prepare --root {dataset_root}`), or put the four "
            "unpacked idx files there"
        )
    train, test = get_fmnist_dataset(str(Path(dataset_root).expanduser()))
    train_set: Dataset = (
        train if max_train_per_class is None else ClassSubset(train, max_train_per_class)
    )
    test_set: Dataset = (
        test if max_test_per_class is None else ClassSubset(test, max_test_per_class)
    )
    if train_transform == "default":
        train_transform = fmnist_default_transforms()[0]
    if eval_transform == "default":
        eval_transform = fmnist_default_transforms()[1]
    return nc_benchmark(
        train_dataset=train_set,
        test_dataset=test_set,
        n_experiences=n_experiences,
        task_labels=False,
        shuffle=False,
        fixed_class_order=order,
        per_exp_classes=per_exp_classes,
        class_ids_from_zero_from_first_exp=True,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )
