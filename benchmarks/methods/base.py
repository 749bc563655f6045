"""What every method of the comparison harness is built from: :class:`Method`, the
settings a run shares (:class:`Setting`), the registry (:data:`METHODS`,
:func:`register`) and the helpers the methods share (the class-balanced herding
memory, byte counts, seeding).

A :class:`Method` knows three things about itself:

* how to build its Avalanche strategy from the settings every method shares
  (:class:`Setting`: backbone, optimiser, epochs, mini-batch, evaluator);
* what it stores besides the live model, counted after training from the strategy's
  own containers (:meth:`Method.stored_bytes`, by kind: :data:`BYTE_KINDS`);
* what a total memory budget buys it (:meth:`Method.exemplars_for`): what it stores
  besides exemplars (:meth:`Method.fixed_bytes`: previous models, M2KD's snapshot
  store, BiC's bias layer) is charged first, and the rest buys exemplars at the
  method's own price (:meth:`Method.exemplar_bytes`: DER's carry their logits, BiC's
  bring a validation split, iCaRL rounds its per-class share up).

An exemplar is counted as the image a method must keep, one byte per value
(784 for Fashion-MNIST, 3,072 for CIFAR), whatever tensor type Avalanche holds it in.
A model is its parameters and buffers in their own dtypes (fp32 weights).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from torch import nn

from avalanche_m2kd import LogitAdjustedCrossEntropy
from avalanche_m2kd.exemplars import ClassBalancedBuffer, HeadInputHerding
from benchmarks import registry
from benchmarks.backbones import make_backbone

__all__ = [
    "BYTE_KINDS",
    "METHODS",
    "Method",
    "Setting",
    "criterion",
    "find_plugin",
    "herding_buffer",
    "model_bytes",
    "register",
    "replay_exemplars",
    "replay_plugins",
    "seed_everything",
    "tensor_bytes",
]

#: The kinds of stored bytes a method reports (:meth:`Method.stored_bytes`).
BYTE_KINDS = ("exemplars", "validation", "logits", "models", "snapshots", "other")

ExemplarUse = Literal["never", "optional", "required"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    Example:
        >>> seed_everything(3)
        >>> a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
        >>> seed_everything(3)
        >>> a == (random.random(), float(np.random.rand()), float(torch.rand(1)))
        True
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def model_bytes(module: nn.Module | None) -> int:
    """Bytes of a module's parameters and buffers (``None``: 0)."""
    if module is None:
        return 0
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of an iterable of tensors."""
    return sum(t.numel() * t.element_size() for t in tensors)


# --------------------------------------------------------------------------- shared settings
@dataclass(frozen=True)
class Setting:
    """What every method of one run shares.

    Args:
        n_classes: classes in the whole stream.
        experience_classes: the (remapped) class ids of each training experience.
        image_shape: one input's shape; its product is an exemplar's bytes.
        backbone, width: :func:`benchmarks.backbones.make_backbone`'s name and CNN width.
        epochs, batch_size, lr, weight_decay: SGD (momentum 0.9) for every method;
            replaying methods add ``batch_size`` replayed images to each mini-batch.
        temperature: distillation temperature (LwF, BiC's is its own, M2KD).
        device: torch device name.
        loggers: Avalanche loggers given to each strategy's evaluator.
    """

    n_classes: int
    experience_classes: tuple[tuple[int, ...], ...]
    image_shape: tuple[int, ...] = (1, 28, 28)
    backbone: str = "cnn"
    width: int = 32
    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    temperature: float = 2.0
    device: str = "cpu"
    loggers: tuple = ()

    @property
    def image_bytes(self) -> int:
        """Bytes of one exemplar image, one byte per value."""
        return math.prod(self.image_shape)

    @property
    def seen_counts(self) -> list[int]:
        """Number of classes seen after each experience."""
        counts, seen = [], 0
        for classes in self.experience_classes:
            seen += len(classes)
            counts.append(seen)
        return counts

    def model(self, head: Literal["incremental", "fixed", "final"] = "incremental") -> nn.Module:
        """A fresh backbone: ``IncrementalClassifier`` head starting with the first
        experience's classes, a fixed ``nn.Linear`` over all classes, or ``"final"``:
        the incremental head already grown to all classes (the size it ends at)."""
        initial = self.n_classes if head == "final" else len(self.experience_classes[0])
        return make_backbone(
            self.backbone,
            in_channels=self.image_shape[0],
            n_classes=self.n_classes,
            initial_classes=initial,
            width=self.width,
            incremental_head=head != "fixed",
        )

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The shared SGD optimiser over ``model``'s parameters."""
        return torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay
        )

    def template_args(self) -> dict[str, Any]:
        """Keyword arguments of every Avalanche strategy (a fresh evaluator each call)."""
        evaluator = EvaluationPlugin(
            accuracy_metrics(experience=True, stream=True), loggers=list(self.loggers)
        )
        return dict(train_mb_size=self.batch_size, train_epochs=self.epochs, eval_mb_size=256,
                    device=self.device, evaluator=evaluator)


def herding_buffer(n_exemplars: int) -> ClassBalancedBuffer:
    """The shared exemplar memory: class-balanced, herding on the head's input."""
    return ClassBalancedBuffer(n_exemplars, HeadInputHerding())


def replay_plugins(n_exemplars: int) -> list:
    """Avalanche's ``ReplayPlugin`` over the shared memory (none without exemplars)."""
    if n_exemplars == 0:
        return []
    return [ReplayPlugin(n_exemplars, storage_policy=herding_buffer(n_exemplars))]


def find_plugin(strategy: Any, kind: type) -> Any:
    """The strategy's plugin of type ``kind`` (``None`` if it has none)."""
    return next((p for p in strategy.plugins if isinstance(p, kind)), None)


def replay_exemplars(strategy: Any) -> int:
    """Exemplars held by the strategy's ``ReplayPlugin`` (0 without one)."""
    plugin = find_plugin(strategy, ReplayPlugin)
    return 0 if plugin is None else len(plugin.storage_policy.buffer)


def criterion(logit_adjusted: bool | float) -> nn.Module:
    """Plain cross-entropy, or the logit-adjusted one with ``tau`` (``True``: 1)."""
    if not logit_adjusted:
        return nn.CrossEntropyLoss()
    return LogitAdjustedCrossEntropy(1.0 if logit_adjusted is True else float(logit_adjusted))


# --------------------------------------------------------------------------- the base class
class Method:
    """One method of the harness. Subclasses set :attr:`exemplars` and implement
    :meth:`build` and :meth:`stored_bytes`; the memory split follows from
    :meth:`fixed_bytes` and :meth:`exemplar_bytes`.

    Args:
        name: the registry name (what ``--methods`` and the records say).
        **defaults: the method's hyper-parameters; ``options`` given to
            :meth:`build` and the memory functions override them.
    """

    #: ``"never"`` (no memory), ``"optional"`` (also exemplar-free) or ``"required"``.
    exemplars: ClassVar[ExemplarUse] = "optional"

    def __init__(self, name: str, **defaults: Any) -> None:  # noqa: D107
        self.name = name
        self.defaults = defaults

    def __repr__(self) -> str:  # noqa: D105
        return f"{type(self).__name__}({self.name!r}, **{self.defaults!r})"

    def params(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """The defaults with ``options`` over them (unknown names are refused).

        Raises:
            ValueError: an option the method does not have.
        """
        unknown = sorted(set(options or {}) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"Method {self.name!r} has no option {unknown}; expected some of "
                f"{sorted(self.defaults)}"
            )
        return {**self.defaults, **(options or {})}

    def build(
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> Any:
        """The Avalanche strategy with memory for ``n_exemplars`` exemplars."""
        raise NotImplementedError

    def stored_bytes(self, strategy: Any, setting: Setting) -> dict[str, int]:
        """Bytes the trained ``strategy`` holds besides the live model, by kind."""
        return dict.fromkeys(BYTE_KINDS, 0)

    def fixed_bytes(self, setting: Setting, options: dict[str, Any] | None = None) -> int:
        """Bytes it will hold at the end of the stream besides exemplars (known before training)."""
        return 0

    def exemplar_bytes(
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> int:
        """Bytes that a memory of ``n_exemplars`` costs it at most, at any step."""
        return n_exemplars * setting.image_bytes

    def min_exemplars(self, options: dict[str, Any] | None = None) -> int:
        """The smallest memory it runs with (0 unless :attr:`exemplars` is ``"required"``)."""
        return 1 if self.exemplars == "required" else 0

    def exemplars_for(self, total_bytes: int, setting: Setting,
                      options: dict[str, Any] | None = None) -> int | None:
        """The most exemplars a total of ``total_bytes`` buys, after :meth:`fixed_bytes`.

        Returns:
            The largest ``n`` with ``fixed_bytes + exemplar_bytes(n) <= total_bytes``;
            ``None`` when the method cannot run within the total (its fixed bytes
            exceed it, or fewer than :meth:`min_exemplars` fit).
        """
        remaining = total_bytes - self.fixed_bytes(setting, options)
        if self.exemplars == "never" or remaining < 0:
            return None
        low, high = 0, remaining // setting.image_bytes  # an exemplar costs at least its image
        while low < high:  # exemplar_bytes is non-decreasing in n
            mid = (low + high + 1) // 2
            if self.exemplar_bytes(mid, setting, options) <= remaining:
                low = mid
            else:
                high = mid - 1
        return None if low < self.min_exemplars(options) else low

    @staticmethod
    def _counts(**kinds: int) -> dict[str, int]:
        out = dict.fromkeys(BYTE_KINDS, 0)
        out.update({k: int(v) for k, v in kinds.items()})
        return out


#: Every method, by name, in the order of the tables.
METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` under its name.

    Raises:
        ValueError: the name is taken.
    """
    return registry.add(METHODS, method, "method")
