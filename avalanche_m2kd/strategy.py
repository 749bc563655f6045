"""``M2KDStrategy``: Avalanche's supervised template plus the M2KD plugins."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin, SupervisedPlugin
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from torch.optim import Optimizer

from avalanche_m2kd.criterion import LogitAdjustedCrossEntropy
from avalanche_m2kd.exemplars import ClassBalancedBuffer, HeadInputHerding
from avalanche_m2kd.features import find_head, resolve_layer_specs
from avalanche_m2kd.option_types import (
    DistillationOptions,
    SnapshotOptions,
    TeacherOptions,
    check_option_keywords,
    m2kd_config,
    option_keywords,
)
from avalanche_m2kd.options import check_int, check_number
from avalanche_m2kd.plugins import (
    MultiLevelDistillationPlugin,
    MultiModelDistillationPlugin,
    SeenClassesMaskingPlugin,
    SnapshotMaskingPlugin,
)
from avalanche_m2kd.plugins.snapshot_masking import default_prune_ratio
from avalanche_m2kd.snapshots import SnapshotStore
from avalanche_m2kd.training import TrainingMixin

__all__ = ["M2KDStrategy"]

# Avalanche 0.6 warns, at every construction, that a strategy's signature accepts
# positional arguments. Ours does on purpose (Avalanche's own order, so that it swaps
# into existing scripts); its separate warning about positional *calls* is kept.
warnings.filterwarnings(
    "ignore", message=r".*Your strategy M2KDStrategy\.__init__ method still has"
)


def _adjusted(criterion: nn.Module, tau: float) -> nn.Module:
    """``criterion`` with logit adjustment ``tau`` where it is plain cross-entropy."""
    check_number(tau, "logit_adjustment")
    if tau == 0 or isinstance(criterion, LogitAdjustedCrossEntropy):
        return criterion
    plain = (
        type(criterion) is nn.CrossEntropyLoss
        and criterion.weight is None
        and criterion.ignore_index == -100
        and criterion.reduction == "mean"
        and criterion.label_smoothing == 0.0
    )
    if not plain:
        warnings.warn(
            f"M2KDStrategy applies `logit_adjustment` only to a plain nn.CrossEntropyLoss; "
            f"the given criterion {type(criterion).__name__} is used unchanged. Pass "
            "logit_adjustment=0 to silence this warning.",
            stacklevel=3,
        )
        return criterion
    return LogitAdjustedCrossEntropy(tau)


def _check_training_options(
    train_epochs: Any, post_prune_epochs: int | None, device: str | torch.device | None
) -> None:
    """Refuse, at construction, what Avalanche or the snapshot plugin would refuse later."""
    check_int(train_epochs, "train_epochs", minimum=1)
    if post_prune_epochs is not None and post_prune_epochs >= train_epochs:
        raise ValueError(
            f"Expected argument `post_prune_epochs` to be < train_epochs={train_epochs} "
            f"(at least one epoch must train before pruning), but got {post_prune_epochs}"
        )
    if device is None:  # Avalanche's default: "cpu"
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"Expected argument `device` to be a torch device, but got {device!r}"
        ) from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device={device!r} but torch sees no CUDA device here (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda}): pass device='cpu', "
                "or check the driver / CUDA_VISIBLE_DEVICES"
            )
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device={device!r} but torch sees {count} CUDA device(s) (indices 0..{count - 1})"
            )


# Avalanche types no `__init_subclass__` keyword: mypy does not know `supports_distributed`.
class _ExemplarReplay(ReplayPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """Avalanche's ``ReplayPlugin``, updating its buffer through ``post_adapt``.

    ``ReplayPlugin.after_training_exp`` calls the buffer's ``update``, deprecated in
    Avalanche 0.6 (a warning per experience, removed in 0.7); ``post_adapt`` is
    what it forwards to.
    """

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self.storage_policy.post_adapt(strategy, strategy.experience)

    def state_dict(self) -> dict[str, Any]:
        """The buffer's :meth:`~avalanche_m2kd.exemplars.ClassBalancedBuffer.state_dict`."""
        return self.storage_policy.state_dict()

    def load_state_dict(self, state: dict[str, Any], datasets: Sequence[Any]) -> None:
        """Rebuild the buffer from the training experiences' ``datasets``."""
        self.storage_policy.load_state_dict(state, datasets)


#: The option groups whose fields are ``M2KDStrategy``'s flat keywords, in its signature's order.
_GROUPS = (SnapshotOptions, DistillationOptions, TeacherOptions)


class M2KDStrategy(TrainingMixin, SupervisedTemplate):
    """M2KD (Zhou et al., BMVC 2020) as an Avalanche strategy.

    A thin composition of Avalanche's ``SupervisedTemplate`` and
    :class:`~avalanche_m2kd.training.TrainingMixin` (torchrun, mixed precision, the
    finite-loss check) with, in this order:

    1. :class:`~avalanche_m2kd.plugins.SnapshotMaskingPlugin` — the snapshot store
       (``nested`` mask-based pruning, ``pruned`` or ``full``);
    2. :class:`~avalanche_m2kd.plugins.SeenClassesMaskingPlugin` — units of classes
       not yet seen never enter a loss or a prediction (plain ``nn.Linear`` heads);
    3. :class:`~avalanche_m2kd.plugins.MultiModelDistillationPlugin` — logit
       distillation from all snapshots;
    4. :class:`~avalanche_m2kd.plugins.MultiLevelDistillationPlugin` — feature
       distillation at named layers (left out when ``feat_weight=0``);
    5. Avalanche's ``ReplayPlugin`` with a class-balanced
       :class:`~avalanche_m2kd.exemplars.ClassBalancedBuffer` and herding selection
       (left out when ``mem_size=0``: exemplar-free);

    then the user's ``plugins``. A plain cross-entropy criterion becomes
    :class:`~avalanche_m2kd.criterion.LogitAdjustedCrossEntropy` (``logit_adjustment``).
    The positional arguments are those of Avalanche's own strategies, so swapping
    ``Naive(...)``/``LwF(...)`` for ``M2KDStrategy(...)`` in a benchmark script is all
    it takes; every M2KD option is keyword-only with a documented default.

    The M2KD options come in three groups, each a frozen object of
    :mod:`avalanche_m2kd.option_types` that validates itself when made and documents
    its fields: :class:`~avalanche_m2kd.option_types.SnapshotOptions`,
    :class:`~avalanche_m2kd.option_types.DistillationOptions` and
    :class:`~avalanche_m2kd.option_types.TeacherOptions`. Give a group as flat keywords
    (``temperature=3.0``) or as its object (``distillation_options=DistillationOptions(
    temperature=3.0)``); an object together with a keyword of its group set off its
    default is refused (a ``ValueError`` naming both), so no option has two values.
    Both distillation plugins get the same ``TeacherOptions``, and the snapshot store,
    which the snapshot plugin owns, gets its ``cache_teachers`` from the strategy.

    Multi-process training (``torchrun``): see
    :class:`~avalanche_m2kd.training.TrainingMixin`. ``strategy.model`` stays the plain
    module, so plugins, the snapshot store and checkpoints see the same parameter names
    as in one process, and every rank records the same snapshot, prunes the same weights
    and picks the same exemplars.

    Args:
        model: the classifier. Its head is an ``IncrementalClassifier`` or a linear
            layer (the last ``nn.Linear``, or ``head_name``).
        optimizer: the optimizer over ``model``'s parameters.
        criterion: the classification loss (cross-entropy).
        train_mb_size, train_epochs, eval_mb_size, device, plugins, evaluator,
            eval_every, peval_mode: as in Avalanche's ``SupervisedTemplate``.
        snapshot_mode, prune_ratio, post_prune_epochs, restore_released_at,
            recalibrate_bn, recalibrate_samples: the fields of
            :class:`~avalanche_m2kd.option_types.SnapshotOptions`, which describes them.
        temperature, mm_weight, teacher_slice, teachers, teacher_sample,
            feature_layers, feature_loss, feature_teachers, feat_weight: the fields of
            :class:`~avalanche_m2kd.option_types.DistillationOptions`, which describes
            them.
        teacher_bn, teacher_dtype, cache_teachers, teacher_batching: the fields of
            :class:`~avalanche_m2kd.option_types.TeacherOptions`, which describes them.
        snapshot_options, distillation_options, teacher_options: a group's options as
            one object, instead of its flat keywords (default ``None``: made from them).
        **options: the flat keywords of the three groups. Their names, defaults and
            types are the fields of the option classes, written there once; the
            signature (``inspect.signature``, ``help()``) lists them. Any other name is a
            ``TypeError``.
        mem_size: exemplar memory size, class-balanced with herding, an int >= 0;
            0 for exemplar-free.
        logit_adjustment: ``tau`` of the
            :class:`~avalanche_m2kd.criterion.LogitAdjustedCrossEntropy` that replaces
            a plain ``nn.CrossEntropyLoss`` criterion (it removes the new-class bias of
            replayed mini-batches, which distillation cannot; 0 keeps the criterion as
            given). The default, 0.75, corrects less than the class prior's full
            ``tau = 1``: the frozen weights and the teachers already hold the old
            classes up. Other criteria are used unchanged, with a warning.
        head_name: dotted name of the classifier head; found when ``None``.
        mixed_precision, ddp_find_unused_parameters, check_finite: as in
            :class:`~avalanche_m2kd.training.TrainingMixin`. ``mixed_precision``
            concerns the student only; the teachers have ``teacher_dtype``.

    Attributes:
        snapshots: the :class:`~avalanche_m2kd.snapshots.SnapshotStore`.
        masking: the :class:`~avalanche_m2kd.plugins.SnapshotMaskingPlugin`.
        m2kd_options: the three option objects the strategy runs with, as
            ``(SnapshotOptions, DistillationOptions, TeacherOptions)``.
        m2kd_config: every M2KD option as a plain value
            (:func:`~avalanche_m2kd.option_types.m2kd_config`); checkpoints
            (:mod:`avalanche_m2kd.checkpoint`) refuse to resume into a strategy
            whose options differ.

    Raises:
        ValueError: an unknown layer or head name, a multi-head model, an option
            out of range, or an option object given with keywords of its group — at
            construction, before any training.
        TypeError: a keyword that is no option (a misspelt one), also when ``model``
            and ``optimizer`` are given by position.
        FloatingPointError: during training, a non-finite loss (``check_finite``).
    """

    @option_keywords(*_GROUPS)
    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        criterion: nn.Module = nn.CrossEntropyLoss(),  # noqa: B008 - Avalanche's signature
        train_mb_size: int = 1,
        train_epochs: int = 1,
        eval_mb_size: int | None = None,
        device: str | torch.device = "cpu",
        plugins: Sequence[SupervisedPlugin] | None = None,
        evaluator: EvaluationPlugin | Callable[[], EvaluationPlugin] = default_evaluator,
        eval_every: int = -1,
        peval_mode: str = "epoch",
        *,
        mem_size: int = 2000,
        logit_adjustment: float = 0.75,
        head_name: str | None = None,
        mixed_precision: torch.dtype | None = None,
        ddp_find_unused_parameters: bool = False,
        check_finite: bool = True,
        snapshot_options: SnapshotOptions | None = None,
        distillation_options: DistillationOptions | None = None,
        teacher_options: TeacherOptions | None = None,
        **options: Any,
    ) -> None:
        check_option_keywords(options, _GROUPS, type(self).__name__)
        head_name = find_head(model, head_name)
        snapshot = SnapshotOptions.resolve(snapshot_options, options)
        distillation = DistillationOptions.resolve(distillation_options, options)
        teacher = TeacherOptions.resolve(teacher_options, options)
        _check_training_options(train_epochs, snapshot.post_prune_epochs, device)
        check_int(mem_size, "mem_size")
        criterion = _adjusted(criterion, logit_adjustment)
        if distillation.feature_layers is not None:
            layers = resolve_layer_specs(model, distillation.feature_layers)
            distillation = dataclasses.replace(distillation, feature_layers=layers)
        self.m2kd_options = (snapshot, distillation, teacher)
        if snapshot.prune_ratio is None:  # the config holds what runs (checkpoints compare it)
            snapshot = dataclasses.replace(
                snapshot, prune_ratio=default_prune_ratio(snapshot.snapshot_mode)
            )
        self.m2kd_config: dict[str, Any] = m2kd_config(
            snapshot, distillation, teacher, mem_size=mem_size, logit_adjustment=logit_adjustment,
            head_name=head_name, mixed_precision=mixed_precision,
        )
        super().__init__(
            model=model, optimizer=optimizer, criterion=criterion, train_mb_size=train_mb_size,
            train_epochs=train_epochs, eval_mb_size=eval_mb_size, device=device,
            plugins=self._m2kd_plugins(head_name, mem_size) + list(plugins or []),
            evaluator=evaluator, eval_every=eval_every, peval_mode=peval_mode,
            mixed_precision=mixed_precision, check_finite=check_finite,
            ddp_find_unused_parameters=ddp_find_unused_parameters,
        )

    def _m2kd_plugins(self, head_name: str, mem_size: int) -> list[SupervisedPlugin]:
        """M2KD's plugins, in the documented order; sets :attr:`masking`."""
        snapshot, distillation, teacher = self.m2kd_options
        self.masking = SnapshotMaskingPlugin(
            snapshot.snapshot_mode,
            snapshot.prune_ratio,
            snapshot.post_prune_epochs,
            head_name=head_name,
            restore_released_at=snapshot.restore_released_at,
            recalibrate_bn=snapshot.recalibrate_bn,
            recalibrate_samples=snapshot.recalibrate_samples,
        )
        store = self.masking.store
        if teacher.cache_teachers is not None:  # a setting of the store its owner made
            store.cache_teachers = teacher.cache_teachers
        shared = dataclasses.replace(teacher, cache_teachers=None)  # the plugins leave it
        m2kd: list[SupervisedPlugin] = [
            self.masking,
            SeenClassesMaskingPlugin(),
            MultiModelDistillationPlugin.from_options(
                distillation, shared, store=store, head_name=head_name
            ),
        ]
        if distillation.feat_weight > 0:
            m2kd.append(MultiLevelDistillationPlugin.from_options(
                distillation, shared, store=store, head_name=head_name
            ))
        if mem_size > 0:
            buffer = ClassBalancedBuffer(mem_size, HeadInputHerding(head_name))
            m2kd.append(_ExemplarReplay(mem_size, storage_policy=buffer))
        return m2kd

    @property
    def snapshots(self) -> SnapshotStore:
        """The :class:`~avalanche_m2kd.snapshots.SnapshotStore` (``len()``, ``teacher(k)``,
        ``nbytes()``, ``state_dict()``)."""
        return self.masking.store
