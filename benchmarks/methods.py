"""The methods of the comparison harness: one small object each, registered by name.

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

Every name Avalanche 0.6.0 keeps private and this harness relies on (``_ICaRLPlugin``,
``ICaRLLossPlugin.old_model``, the module-level ``MultiStepLR`` of
``avalanche.training.plugins.bic`` and ``BiCPlugin.cross_entropy``, DER's ``storage_policy``
with its ``logits`` attribute) is used in this module only; ``tests/benchmarks/test_methods.py``
pins them.

Example:
    >>> setting = Setting(n_classes=10, experience_classes=((0, 1), (2, 3)))
    >>> METHODS["er-ace"].exemplars_for(10 * 784, setting)
    10
    >>> METHODS["der"].exemplar_bytes(10, setting)  # image + 10 fp32 logits each
    8240
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from avalanche.benchmarks.utils import concat_datasets
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import DER as _DER
from avalanche.training import ER_ACE as _ER_ACE
from avalanche.training import ICaRL as _ICaRL
from avalanche.training import LwF as _LwF
from avalanche.training import Naive as _Naive
from avalanche.training.plugins import EvaluationPlugin, LwFPlugin, ReplayPlugin
from avalanche.training.plugins import bic as _bic_module
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from avalanche_m2kd import LogitAdjustedCrossEntropy, M2KDStrategy
from avalanche_m2kd.exemplars import ClassBalancedBuffer, HeadInputHerding
from avalanche_m2kd.plugins import SeenClassesMaskingPlugin
from avalanche_m2kd.pruning import FaithfulKeep
from benchmarks.backbones import make_backbone

__all__ = [
    "BYTE_KINDS",
    "METHODS",
    "Method",
    "Setting",
    "model_bytes",
    "register",
    "seed_everything",
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


def _tensor_bytes(tensors) -> int:
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


def _herding_buffer(n_exemplars: int) -> ClassBalancedBuffer:
    """The shared exemplar memory: class-balanced, herding on the head's input."""
    return ClassBalancedBuffer(n_exemplars, HeadInputHerding())


def _replay_plugins(n_exemplars: int) -> list:
    """Avalanche's ``ReplayPlugin`` over the shared memory (none without exemplars)."""
    if n_exemplars == 0:
        return []
    return [ReplayPlugin(n_exemplars, storage_policy=_herding_buffer(n_exemplars))]


def _plugin(strategy, kind: type):
    """The strategy's plugin of type ``kind`` (``None`` if it has none)."""
    return next((p for p in strategy.plugins if isinstance(p, kind)), None)


def _replay_exemplars(strategy) -> int:
    plugin = _plugin(strategy, ReplayPlugin)
    return 0 if plugin is None else len(plugin.storage_policy.buffer)


def _criterion(logit_adjusted: bool | float) -> nn.Module:
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

    def build(self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None):
        """The Avalanche strategy with memory for ``n_exemplars`` exemplars."""
        raise NotImplementedError

    def stored_bytes(self, strategy, setting: Setting) -> dict[str, int]:
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
    if method.name in METHODS:
        raise ValueError(f"A method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


# --------------------------------------------------------------------------- the methods
class NaiveMethod(Method):
    """Avalanche's ``Naive``: fine-tuning, nothing stored."""

    exemplars = "never"

    def build(self, n_exemplars, setting, options=None):  # noqa: D102
        model = setting.model()
        return _Naive(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=nn.CrossEntropyLoss(),
            **setting.template_args(),
        )


class ReplayMethod(Method):
    """Avalanche's ``Naive`` with ``ReplayPlugin`` over the shared herding memory.

    Args:
        logit_adjusted: M2KD's :class:`~avalanche_m2kd.LogitAdjustedCrossEntropy` as
            criterion instead of cross-entropy: ``True`` with Menon et al.'s ``tau = 1``,
            a float for another ``tau``.
    """

    exemplars = "required"

    def __init__(self, name: str, logit_adjusted: bool | float = False) -> None:  # noqa: D107
        super().__init__(name, logit_adjusted=logit_adjusted)

    def build(self, n_exemplars, setting, options=None):  # noqa: D102
        p, model = self.params(options), setting.model()
        return _Naive(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=_criterion(p["logit_adjusted"]),
            plugins=_replay_plugins(n_exemplars),
            **setting.template_args(),
        )

    def stored_bytes(self, strategy, setting):  # noqa: D102
        return self._counts(exemplars=_replay_exemplars(strategy) * setting.image_bytes)


class LwFMethod(Method):
    """Avalanche's ``LwF`` (plus the shared replay memory when it has exemplars).

    Avalanche's LwF loss has no T² factor: ``alpha = T²`` gives it M2KD's scale.
    It keeps one previous model (the final one at the end).

    Args:
        logit_adjusted: as :class:`ReplayMethod`.
    """

    def __init__(self, name: str, logit_adjusted: bool = False) -> None:  # noqa: D107
        super().__init__(name, logit_adjusted=logit_adjusted)

    def build(self, n_exemplars, setting, options=None):  # noqa: D102
        p, model = self.params(options), setting.model()
        t = setting.temperature
        return _LwF(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=_criterion(p["logit_adjusted"]),
            alpha=t**2,
            temperature=t,
            plugins=_replay_plugins(n_exemplars),
            **setting.template_args(),
        )

    def stored_bytes(self, strategy, setting):  # noqa: D102
        previous = _plugin(strategy, LwFPlugin).lwf.prev_model
        return self._counts(exemplars=_replay_exemplars(strategy) * setting.image_bytes,
                            models=model_bytes(previous))

    def fixed_bytes(self, setting, options=None):  # noqa: D102
        return model_bytes(setting.model("final"))


def _icarl_plugins(strategy):
    """iCaRL's exemplar plugin (``_ICaRLPlugin``) and loss plugin (``ICaRLLossPlugin``)."""
    from avalanche.training.losses import ICaRLLossPlugin
    from avalanche.training.supervised.icarl import _ICaRLPlugin

    return _plugin(strategy, _ICaRLPlugin), _plugin(strategy, ICaRLLossPlugin)


class ICaRLMethod(Method):
    """Avalanche's ``ICaRL`` with a fixed head and its own herding memory
    (``fixed_memory=True``: ``ceil(memory / seen classes)`` exemplars per class).

    It keeps one previous model (whose nearest-mean classifier holds the class
    means) and the class means again in its exemplar plugin.
    """

    exemplars = "required"

    def build(self, n_exemplars, setting, options=None):  # noqa: D102
        net = setting.model("fixed")
        return _ICaRL(
            feature_extractor=net.feature_extractor,
            classifier=net.classifier,
            optimizer=setting.optimizer(net),
            memory_size=n_exemplars,
            buffer_transform=None,
            fixed_memory=True,
            **setting.template_args(),
        )

    def stored_bytes(self, strategy, setting):  # noqa: D102
        memory, loss = _icarl_plugins(strategy)
        return self._counts(
            exemplars=sum(len(x) for x in memory.x_memory) * setting.image_bytes,
            models=model_bytes(loss.old_model),
            other=_tensor_bytes(memory.class_means.values()),
        )

    def fixed_bytes(self, setting, options=None):  # noqa: D102
        net = setting.model("fixed")
        means = setting.n_classes * net.classifier.in_features * 4  # fp32 mean of every class
        # the old model's classifier holds them, so does the plugin
        return model_bytes(net) + 2 * means

    def exemplar_bytes(self, n_exemplars, setting, options=None):  # noqa: D102
        held = max((k * math.ceil(n_exemplars / k) for k in setting.seen_counts), default=0)
        return held * setting.image_bytes


class ERACEMethod(Method):
    """Avalanche's ``ER_ACE`` (Caccia et al., ICLR 2022), its own class-balanced memory
    (random within class, updated before each experience).

    ``batch_size_mem``: ``None`` is the shared mini-batch (as many replayed images
    as new ones; Avalanche's default is 10, for its online setting).
    """

    exemplars = "required"

    def __init__(self, name: str, batch_size_mem: int | None = None) -> None:  # noqa: D107
        super().__init__(name, batch_size_mem=batch_size_mem)

    def build(self, n_exemplars, setting, options=None):  # noqa: D102
        p, model = self.params(options), setting.model()
        return _ER_ACE(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=nn.CrossEntropyLoss(),
            mem_size=n_exemplars,
            batch_size_mem=p["batch_size_mem"] or setting.batch_size,
            **setting.template_args(),
        )

    def stored_bytes(self, strategy, setting):  # noqa: D102
        return self._counts(exemplars=len(strategy.storage_policy.buffer) * setting.image_bytes)


class _PredictSeenClasses(SeenClassesMaskingPlugin):
    """Units of unseen classes masked in evaluation only (DER's ``mask_unseen="eval"``):
    the whole fixed head trains, as in DER's paper."""

    def after_forward(self, strategy, *args, **kwargs):  # noqa: D102
        return None


class DERMethod(Method):
    """Avalanche's ``DER`` (DER++ with ``beta > 0``; Buzzega et al., NeurIPS 2020).

    DER stores each exemplar's logits of the head's size at storage time, so it
    gets a fixed ``nn.Linear`` head over all classes (with a growing
    ``IncrementalClassifier`` the stored and current logits differ in size; with one
    sized for all classes from the start, the stored logits of units not yet active
    are its mask value, -1000, and the logit MSE wrecks those units once their
    classes arrive).

    Args:
        alpha, beta: the logit-MSE and replay cross-entropy weights; default 0.2
            and 1.0, the paper's for Seq-MNIST with 200 exemplars (its code's
            ``best_args``, the benchmark nearest to ours). Avalanche's defaults,
            0.1 and 0.5, are the paper's for Seq-CIFAR-10.
        batch_size_mem: replayed images per step; ``None``: the shared mini-batch
            (Avalanche's default too).
        mask_unseen: ``"always"`` (default): units of classes not seen yet are
            masked in the losses and the predictions
            (:class:`~avalanche_m2kd.plugins.SeenClassesMaskingPlugin`), which is
            what the ``IncrementalClassifier`` of every other method does; the
            logits DER stores come from the model's own forward, unmasked.
            ``"eval"``: in the predictions only (the paper's training, whole head in
            every loss); ``"none"``: never.
    """

    exemplars = "required"
    _MASKS = ("always", "eval", "none")

    def __init__(  # noqa: D107
        self,
        name: str,
        alpha: float = 0.2,
        beta: float = 1.0,
        batch_size_mem: int | None = None,
        mask_unseen: str = "always",
    ) -> None:
        super().__init__(
            name, alpha=alpha, beta=beta, batch_size_mem=batch_size_mem, mask_unseen=mask_unseen
        )

    def build(self, n_exemplars, setting, options=None):  # noqa: D102
        p, model = self.params(options), setting.model("fixed")
        if p["mask_unseen"] not in self._MASKS:
            raise ValueError(
                f"Expected `mask_unseen` to be one of {self._MASKS}, but got {p['mask_unseen']!r}"
            )
        plugins = {
            "always": [SeenClassesMaskingPlugin()],
            "eval": [_PredictSeenClasses()],
            "none": [],
        }
        return _DER(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=nn.CrossEntropyLoss(),
            mem_size=n_exemplars,
            batch_size_mem=p["batch_size_mem"] or setting.batch_size,
            alpha=p["alpha"],
            beta=p["beta"],
            plugins=plugins[p["mask_unseen"]],
            **setting.template_args(),
        )

    def stored_bytes(self, strategy, setting):  # noqa: D102
        buffer = strategy.storage_policy.buffer
        return self._counts(exemplars=len(buffer) * setting.image_bytes,
                            logits=_tensor_bytes(buffer.logits))

    def exemplar_bytes(self, n_exemplars, setting, options=None):  # noqa: D102
        # fp32 logits of the fixed head
        return n_exemplars * (setting.image_bytes + 4 * setting.n_classes)


class _MultiStepLRWithoutVerbose(torch.optim.lr_scheduler.MultiStepLR):
    """``MultiStepLR`` that drops the ``verbose`` argument torch 2.14 no longer takes."""

    def __init__(self, *args, verbose: Any = None, **kwargs) -> None:  # noqa: D107
        super().__init__(*args, **kwargs)


@contextlib.contextmanager
def _bic_scheduler_without_verbose() -> Iterator[None]:
    """While inside, Avalanche's BiC module builds its scheduler without ``verbose``
    (only where torch's ``MultiStepLR`` rejects it); restored on exit."""
    original = _bic_module.MultiStepLR
    if "verbose" in inspect.signature(original.__init__).parameters:
        yield
        return
    _bic_module.MultiStepLR = _MultiStepLRWithoutVerbose
    try:
        yield
    finally:
        _bic_module.MultiStepLR = original


class _BiCPlugin(_bic_module.BiCPlugin):
    """Avalanche 0.6.0's ``BiCPlugin`` with two repairs.

    * Its bias-correction step runs with :func:`_bic_scheduler_without_verbose` (it
      passes ``verbose=`` to ``MultiStepLR``, which torch 2.14 refuses with a
      ``TypeError``).
    * ``distillation="paper"`` (default): the distillation targets are the old
      model's softmax over the classes at temperature ``T``, as in BiC's paper and
      code (``tf.nn.softmax(dis_logits / T)``, last axis). Avalanche 0.6.0 takes the
      softmax over ``dim=0``, the mini-batch, at a fixed ``/ 2``; ``"avalanche"``
      keeps that.

    And one choice: ``sampling="replay"`` (default) keeps Avalanche's loader, half of
    each mini-batch from the new data and half from the memory (the harness's shared
    setting); ``"union"`` draws mini-batches of twice the size uniformly from the new
    data and the memory together, as BiC's paper trains.

    Args:
        distillation: ``"paper"`` or ``"avalanche"``.
        sampling: ``"replay"`` or ``"union"``.
        *args, **kwargs: ``BiCPlugin``'s.
    """

    def __init__(  # noqa: D107
        self, *args, distillation: str = "paper", sampling: str = "replay", **kwargs
    ) -> None:
        if distillation not in ("paper", "avalanche"):
            raise ValueError(
                f"Expected `distillation` to be 'paper' or 'avalanche', but got {distillation!r}"
            )
        if sampling not in ("replay", "union"):
            raise ValueError(
                f"Expected `sampling` to be 'replay' or 'union', but got {sampling!r}"
            )
        super().__init__(*args, **kwargs)
        self.distillation = distillation
        self.sampling = sampling

    def before_training_exp(self, strategy, num_workers: int = 0, shuffle: bool = True, **kwargs):  # noqa: D102
        super().before_training_exp(strategy, num_workers=num_workers, shuffle=shuffle, **kwargs)
        if self.sampling == "union" and len(self.storage_policy.buffer) > 0:
            union = concat_datasets([strategy.adapted_dataset, self.storage_policy.buffer])
            strategy.dataloader = torch.utils.data.DataLoader(
                union, batch_size=2 * strategy.train_mb_size, shuffle=shuffle,
                num_workers=num_workers, collate_fn=getattr(union, "collate_fn", None),
            )

    def bias_correction_step(self, *args, **kwargs):  # noqa: D102
        with _bic_scheduler_without_verbose():
            return super().bias_correction_step(*args, **kwargs)

    def cross_entropy(self, new_outputs: torch.Tensor, old_outputs: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the new logits against the old model's soft targets, both at ``T``."""
        if self.distillation == "avalanche":
            return super().cross_entropy(new_outputs, old_outputs)
        targets = torch.softmax(old_outputs / self.T, dim=1)
        return nn.functional.cross_entropy(new_outputs / self.T, targets)


class BiCMethod(Method):
    """Avalanche's BiC (Wu et al., CVPR 2019): ``SupervisedTemplate`` + ``BiCPlugin``,
    as ``avalanche.training.BiC`` composes them, with the shared class-balanced
    herding memory as its storage policy (Avalanche's default is experience-balanced).

    BiC holds out a validation split of ``int(val_percentage * memory)`` images
    (per class an equal share, taken from each new class's training data) on top of
    its memory, keeps one previous model and the last bias layer.

    Args:
        val_percentage, T, stage_2_epochs, lamb, lr: ``BiCPlugin``'s arguments, at
            Avalanche's defaults (FACIL's): 0.1, 2, 200, -1 (``n_old / n_all``, the
            paper's), 0.1.
        distillation: ``"paper"`` (default) or ``"avalanche"`` (see :class:`_BiCPlugin`).
        sampling: ``"replay"`` (default) or ``"union"`` (see :class:`_BiCPlugin`).
    """

    exemplars = "required"

    def __init__(  # noqa: D107
        self,
        name: str,
        val_percentage: float = 0.1,
        T: int = 2,
        stage_2_epochs: int = 200,
        lamb: float = -1,
        lr: float = 0.1,
        distillation: str = "paper",
        sampling: str = "replay",
    ) -> None:
        super().__init__(
            name,
            val_percentage=val_percentage,
            T=T,
            stage_2_epochs=stage_2_epochs,
            lamb=lamb,
            lr=lr,
            distillation=distillation,
            sampling=sampling,
        )

    def build(self, n_exemplars, setting, options=None):  # noqa: D102
        model = setting.model()
        plugin = _BiCPlugin(
            mem_size=n_exemplars,
            storage_policy=_herding_buffer(n_exemplars),
            **self.params(options),
        )
        return SupervisedTemplate(
            model=model,
            optimizer=setting.optimizer(model),
            criterion=nn.CrossEntropyLoss(),
            plugins=[plugin],
            **setting.template_args(),
        )

    def stored_bytes(self, strategy, setting):  # noqa: D102
        bic = _plugin(strategy, _bic_module.BiCPlugin)
        validation = sum(len(group.buffer) for group in bic.val_buffer.values())
        return self._counts(
            exemplars=len(bic.storage_policy.buffer) * setting.image_bytes,
            validation=validation * setting.image_bytes,
            models=model_bytes(bic.model_old),
            other=model_bytes(bic.bias_layer),
        )

    def fixed_bytes(self, setting, options=None):  # noqa: D102
        last = len(setting.experience_classes[-1]) if len(setting.experience_classes) > 1 else None
        # alpha, beta (fp32) and the class ids (int64)
        bias_layer = 0 if last is None else 4 + 4 + 8 * last
        return model_bytes(setting.model("final")) + bias_layer

    def min_exemplars(self, options=None):  # noqa: D102 - its validation split needs one image
        return math.ceil(1 / self.params(options)["val_percentage"])

    def exemplar_bytes(self, n_exemplars, setting, options=None):  # noqa: D102
        # BiCPlugin's own rounding
        validation = int(self.params(options)["val_percentage"] * n_exemplars)
        return (n_exemplars + validation) * setting.image_bytes


class M2KDMethod(Method):
    """:class:`~avalanche_m2kd.M2KDStrategy` with its defaults, overridden by
    ``options`` (the ablation's variants). ``teacher_dtype`` and ``mixed_precision``
    are names of ``torch`` dtypes and a ``prune_ratio`` dictionary is
    :meth:`FaithfulKeep.plain() <avalanche_m2kd.pruning.FaithfulKeep.plain>` (records
    are JSON).

    Its fixed bytes are its snapshot store's final size, measured by construction:
    :func:`store_bytes` runs the same strategy on a two-images-per-class stand-in of
    the stream (same class structure, untrained weights, one epoch) and reads
    ``strategy.snapshots.nbytes()``, which depends on the model's shapes and the
    stream, not on the data.
    """

    def __init__(self, name: str, **defaults: Any) -> None:  # noqa: D107
        super().__init__(name, **defaults)

    def params(self, options=None):  # noqa: D102 - any M2KDStrategy option
        return {**self.defaults, **(options or {})}

    def build(self, n_exemplars, setting, options=None):  # noqa: D102
        p = self.params(options)
        p.setdefault("temperature", setting.temperature)
        plugins = p.pop("plugins", None)
        for key in ("teacher_dtype", "mixed_precision"):
            if isinstance(p.get(key), str):
                p[key] = getattr(torch, p[key])
        if isinstance(p.get("prune_ratio"), dict):  # FaithfulKeep.plain()
            p["prune_ratio"] = FaithfulKeep(**p["prune_ratio"]["faithful_keep"])
        model = setting.model()
        return M2KDStrategy(
            model,
            setting.optimizer(model),
            nn.CrossEntropyLoss(),
            mem_size=n_exemplars,
            plugins=plugins,
            **p,
            **setting.template_args(),
        )

    def stored_bytes(self, strategy, setting):  # noqa: D102
        return self._counts(exemplars=_replay_exemplars(strategy) * setting.image_bytes,
                            snapshots=strategy.snapshots.nbytes())

    def fixed_bytes(self, setting, options=None):  # noqa: D102
        return store_bytes(self, setting, options)


_STORE_BYTES: dict[str, int] = {}


def _stand_in_stream(setting: Setting):
    """A stream with ``setting``'s class structure and two random images per class."""
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(0)
    targets = [c for c in range(setting.n_classes) for _ in range(2)]
    data = TensorDataset(
        torch.rand(len(targets), *setting.image_shape, generator=generator), torch.tensor(targets)
    )
    data.targets = targets
    order = [c for classes in setting.experience_classes for c in classes]
    return nc_benchmark(
        train_dataset=data,
        test_dataset=data,
        n_experiences=len(setting.experience_classes),
        task_labels=False,
        shuffle=False,
        fixed_class_order=order,
        per_exp_classes={k: len(c) for k, c in enumerate(setting.experience_classes)},
        class_ids_from_zero_from_first_exp=True,
    )


def store_bytes(method: M2KDMethod, setting: Setting, options: dict[str, Any] | None = None) -> int:
    """The final ``snapshots.nbytes()`` of ``method`` on ``setting``'s stream, by construction.

    Runs :meth:`M2KDMethod.build` (exemplar-free, one epoch, pruning at its end) on
    :func:`_stand_in_stream` and returns the store's bytes after the last experience.
    The global RNG states are restored afterwards; results are cached per input.
    """
    import json

    p = {k: v for k, v in method.params(options).items() if k != "plugins"}
    key = json.dumps(
        [
            repr(setting.experience_classes), setting.n_classes, setting.image_shape,
            setting.backbone, setting.width, p,
        ],
        sort_keys=True,
        default=str,
    )
    if key not in _STORE_BYTES:
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            torch.manual_seed(0)
            dry = replace(
                setting,
                epochs=1,
                batch_size=2 * max(len(c) for c in setting.experience_classes),
                loggers=(),
            )
            strategy = method.build(0, dry, {**(options or {}), "post_prune_epochs": 0})
            for experience in _stand_in_stream(setting).train_stream:
                strategy.train(experience, num_workers=0)
            _STORE_BYTES[key] = int(strategy.snapshots.nbytes())
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
    return _STORE_BYTES[key]


for _method in (
    NaiveMethod("naive"),
    ReplayMethod("replay"),
    ReplayMethod("replay-la", logit_adjusted=True),
    # M2KD's default strength, to check that the peer is not disadvantaged by its tau = 1
    ReplayMethod("replay-la-0.75", logit_adjusted=0.75),
    LwFMethod("lwf"),
    LwFMethod("lwf-la", logit_adjusted=True),
    ICaRLMethod("icarl"),
    ERACEMethod("er-ace"),
    DERMethod("der"),
    BiCMethod("bic"),
    BiCMethod("bic-union", sampling="union"),
    M2KDMethod("m2kd"),
    M2KDMethod("m2kd-full", snapshot_mode="full"),
):
    register(_method)
del _method
