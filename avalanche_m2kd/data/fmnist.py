"""Split Fashion-MNIST offline: ``SplitFMNIST``'s data in tensors, subsampled, uneven streams.

Fashion-MNIST's four idx files are what torchvision (and so Avalanche's
``SplitFMNIST``) reads from ``<root>/FashionMNIST/raw/``. With no network, Debian's
``dataset-fashion-mnist`` package is a source: it installs the gzipped originals in
``/usr/share/datasets/fashion-mnist/``. :func:`prepare_fashion_mnist` unpacks them
where torchvision looks (the ``.gz`` files alone are not enough: torchvision would
try to download them again), and :func:`split_fmnist` builds the class-incremental
benchmark as ``SplitFMNIST`` does (``nc_benchmark`` over the same samples, with the
same values as its default transforms give) with two additions the CPU comparison
needs: a per-class subsample and an uneven first experience (``2 + 1 x 8``).

With the default transforms the images are decoded and normalised once, into one
tensor (:func:`fashion_mnist_tensors`), instead of image by image through PIL,
``ToTensor`` and ``Normalize`` at every access: the same float32 values bit for bit,
about nine times the images per second through a ``DataLoader``.
"""

from __future__ import annotations

import gzip
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from avalanche.benchmarks import NCScenario
from torch import Tensor
from torch.utils.data import Dataset

from avalanche_m2kd._avalanche import fmnist_default_transforms
from avalanche_m2kd.data.cifar import ClassSubset
from avalanche_m2kd.data.tensors import TensorClassificationDataset, first_per_class

__all__ = [
    "DEBIAN_FASHION_MNIST",
    "FMNIST_FILES",
    "FMNIST_MEAN",
    "FMNIST_STD",
    "FashionMNISTNotFoundError",
    "fashion_mnist_ready",
    "fashion_mnist_tensors",
    "normalise_fmnist",
    "prepare_fashion_mnist",
    "read_idx",
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


#: ``SplitFMNIST``'s normalisation (its default transforms' ``Normalize``).
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530

#: The idx format's type codes (third byte of the magic number) that this reader reads.
_IDX_DTYPES = {0x08: torch.uint8}


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


def read_idx(path: str | Path) -> Tensor:
    """The array an idx file holds (MNIST's format, as unpacked by
    :func:`prepare_fashion_mnist`), as a ``uint8`` tensor of its shape.

    Raises:
        ValueError: the file is not an unsigned-byte idx file of the size its header says.
    """
    raw = Path(path).read_bytes()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"Expected an unsigned-byte idx file at {path}, but its header is "
                         f"{raw[:4]!r}; unpack it again with prepare_fashion_mnist")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start, size = 4 + 4 * ndim, math.prod(shape)
    if len(raw) != start + size:
        raise ValueError(f"Expected {start + size} bytes in {path} (shape {shape}), but it has "
                         f"{len(raw)}; unpack it again with prepare_fashion_mnist")
    return torch.frombuffer(bytearray(raw[start:]), dtype=_IDX_DTYPES[raw[2]]).view(*shape)


def normalise_fmnist(images: Tensor) -> Tensor:
    """``(N, 28, 28)`` ``uint8`` images as ``SplitFMNIST``'s default transforms give
    them one by one (``ToTensor``: ``/ 255``; then ``Normalize``), in one go:
    ``(N, 1, 28, 28)`` float32, bit for bit the same values.

    Example:
        >>> from torchvision import transforms
        >>> from PIL import Image
        >>> images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
        >>> one_by_one = transforms.Compose(
        ...     [transforms.ToTensor(), transforms.Normalize((FMNIST_MEAN,), (FMNIST_STD,))])
        >>> expected = torch.stack([one_by_one(Image.fromarray(i.numpy())) for i in images])
        >>> torch.equal(normalise_fmnist(images), expected)
        True
    """
    mean = torch.tensor(FMNIST_MEAN, dtype=torch.float32)
    std = torch.tensor(FMNIST_STD, dtype=torch.float32)
    return images.unsqueeze(1).to(torch.float32).div(255).sub(mean).div(std)


def fashion_mnist_tensors(
    root: str | Path, train: bool, max_per_class: int | None = None
) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST's training (or test) set as two tensors: the images normalised
    (:func:`normalise_fmnist`) and the labels (int64); with ``max_per_class``, the
    first ``k`` samples of each class, in file order.

    Args:
        root: the folder holding ``FashionMNIST/raw/`` (see :func:`prepare_fashion_mnist`).
        train: the training set if True, else the test set.
        max_per_class: samples kept per class; ``None`` keeps them all.
    """
    raw = _raw(root)
    prefix = "train" if train else "t10k"
    labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte").long()
    keep = first_per_class(labels, max_per_class)
    images = read_idx(raw / f"{prefix}-images-idx3-ubyte")
    if len(images) != len(labels):
        raise ValueError(f"{raw} holds {len(images)} {prefix} images but {len(labels)} labels; "
                         "unpack the files again with prepare_fashion_mnist")
    return normalise_fmnist(images[keep]), labels[keep]


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

    The same benchmark as Avalanche's ``SplitFMNIST`` (the same samples in the same
    order, ``nc_benchmark`` with ``class_ids_from_zero_from_first_exp``, the values of
    its default transforms), plus:

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
        train_transform, eval_transform: ``"default"`` (both): the images decoded
            and normalised once into tensors (:func:`fashion_mnist_tensors`), the values
            ``SplitFMNIST``'s ``ToTensor`` + ``Normalize`` give, no per-image transform.
            Anything else: torchvision's dataset (PIL images), with these transforms
            (``"default"`` for one of them: ``SplitFMNIST``'s), as ``SplitFMNIST`` has it.

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
    train_set: Dataset
    test_set: Dataset
    if train_transform == "default" and eval_transform == "default":
        train_set = TensorClassificationDataset(
            *fashion_mnist_tensors(dataset_root, True, max_train_per_class)
        )
        test_set = TensorClassificationDataset(
            *fashion_mnist_tensors(dataset_root, False, max_test_per_class)
        )
        train_transform = eval_transform = None
    else:
        train, test = get_fmnist_dataset(str(Path(dataset_root).expanduser()))
        train_set, test_set = train, test
        if max_train_per_class is not None:
            train_set = ClassSubset(train, max_train_per_class)
        if max_test_per_class is not None:
            test_set = ClassSubset(test, max_test_per_class)
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
