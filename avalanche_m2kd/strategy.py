"""``M2KDStrategy``: Avalanche's supervised template plus the M2KD plugins."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional, Sequence, Union

import torch
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin, SupervisedPlugin
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from torch.optim import Optimizer

from avalanche_m2kd.batched_teachers import TeacherBatching, check_teacher_batching
from avalanche_m2kd.criterion import LogitAdjustedCrossEntropy
from avalanche_m2kd.exemplars import ClassBalancedBuffer, HeadInputHerding
from avalanche_m2kd.features import find_head, resolve_layer_specs
from avalanche_m2kd.losses import FeatureLoss, TeacherSlice
from avalanche_m2kd.options import check_choice
from avalanche_m2kd.plugins import (
    MultiLevelDistillationPlugin,
    MultiModelDistillationPlugin,
    SeenClassesMaskingPlugin,
    SnapshotMaskingPlugin,
)
from avalanche_m2kd.plugins._teachers import TeacherSet
from avalanche_m2kd.plugins.snapshot_masking import ReleasedRestore
from avalanche_m2kd.pruning import PruneRatio
from avalanche_m2kd.snapshots import SnapshotMode, SnapshotStore, TeacherBatchNorm
from avalanche_m2kd.training import TrainingMixin

__all__ = ["M2KDStrategy"]

# Avalanche 0.6 warns, at every construction, that a strategy's signature accepts
# positional arguments. Ours does on purpose (Avalanche's own order, so that it swaps
# into existing scripts); its separate warning about positional *calls* is kept.
warnings.filterwarnings("ignore", message=r".*Your strategy M2KDStrategy\.__init__ method still has")


def _adjusted(criterion: nn.Module, tau: float) -> nn.Module:
    """``criterion`` with logit adjustment ``tau`` where it is plain cross-entropy."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or tau < 0:
        raise ValueError(f"Expected argument `logit_adjustment` to be a number >= 0, but got {tau!r}")
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
    train_epochs: Any, post_prune_epochs: Any, device: Union[str, torch.device, None]
) -> None:
    """Refuse, at construction, what Avalanche or the snapshot plugin would refuse later."""
    if isinstance(train_epochs, bool) or not isinstance(train_epochs, int) or train_epochs < 1:
        raise ValueError(f"Expected argument `train_epochs` to be an int >= 1, but got {train_epochs!r}")
    if isinstance(post_prune_epochs, int) and not isinstance(post_prune_epochs, bool):
        if post_prune_epochs >= train_epochs:
            raise ValueError(
                f"Expected argument `post_prune_epochs` to be < train_epochs={train_epochs} "
                f"(at least one epoch must train before pruning), but got {post_prune_epochs}"
            )
    if device is None:  # Avalanche's default: "cpu"
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Expected argument `device` to be a torch device, but got {device!r}") from err
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


class _ExemplarReplay(ReplayPlugin, supports_distributed=True):
    """Avalanche's ``ReplayPlugin``, updating its buffer through ``post_adapt``.

    ``ReplayPlugin.after_training_exp`` calls the buffer's ``update``, deprecated in
    Avalanche 0.6 (a warning per experience, removed in 0.7); ``post_adapt`` is
    what it forwards to.
    """

    def after_training_exp(self, strategy, **kwargs):
        self.storage_policy.post_adapt(strategy, strategy.experience)

    def state_dict(self) -> dict[str, Any]:
        """The buffer's :meth:`~avalanche_m2kd.exemplars.ClassBalancedBuffer.state_dict`."""
        return self.storage_policy.state_dict()

    def load_state_dict(self, state: dict[str, Any], datasets: Sequence[Any]) -> None:
        """Rebuild the buffer from the training experiences' ``datasets``."""
        self.storage_policy.load_state_dict(state, datasets)


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

    Multi-process training (``torchrun``, after Avalanche's
    ``DistributedHelper.init_distributed(...)``): Avalanche 0.6.0 shards the data but
    never wraps the model in ``DistributedDataParallel``. This strategy does, for the
    training forward only, and wraps it again at every experience, after model
    adaptation, so head units added by an ``IncrementalClassifier`` are in the
    gradient sync. ``strategy.model`` stays the plain module (plugins, the snapshot
    store and checkpoints see the same parameter names as in one process). At the end
    of each experience every rank takes rank 0's buffers (BatchNorm statistics, as
    DDP does at each forward), so all ranks record the same snapshot, prune the same
    weights and pick the same exemplars (tested with 2 CPU processes: every tensor
    identical on both ranks).

    Args:
        model: the classifier. Its head is an ``IncrementalClassifier`` or a linear
            layer (the last ``nn.Linear``, or ``head_name``).
        optimizer: the optimizer over ``model``'s parameters.
        criterion: the classification loss (cross-entropy).
        train_mb_size, train_epochs, eval_mb_size, device, plugins, evaluator,
            eval_every, peval_mode: as in Avalanche's ``SupervisedTemplate``.
        feature_layers: layers of the multi-level term (dotted names, ``":input"``
            suffix for a module's input). Default ``None``: the head's input.
        mem_size: exemplar memory size, class-balanced with herding. Default 2000
            (SPEC, iCaRL's protocol); 0 for exemplar-free.
        snapshot_mode: ``"nested"`` (default, the paper's mask-based pruning),
            ``"pruned"`` or ``"full"``.
        prune_ratio: see :class:`~avalanche_m2kd.plugins.SnapshotMaskingPlugin`
            (default ``"fair"`` in ``nested``, 0.5 in ``pruned``).
        post_prune_epochs: fine-tuning epochs after pruning (default
            ``train_epochs // 4``).
        temperature: distillation temperature (SPEC default 2).
        mm_weight: ``lambda_mm`` (SPEC default 1).
        feat_weight: ``lambda_feat`` (SPEC default 1).
        teacher_slice: ``"own"`` (default: SPEC's reading, kept by our ablation) or
            ``"cumulative"``.
        teachers: ``"all"`` (paper) or ``"last"`` (LwF-style).
        feature_loss: ``"normalized_mse"`` (SPEC default), ``"mse"``, ``"attention"``.
        feature_teachers: ``"last"`` (SPEC default) or ``"all"``.
        teacher_bn: statistics of the teachers' BatchNorm layers on the distilled
            mini-batch: ``"batch"`` (default, ours; as the student in training mode
            and Avalanche's ``LwF``) or ``"running"`` (the snapshot's eval mode).
        logit_adjustment: ``tau`` of the
            :class:`~avalanche_m2kd.criterion.LogitAdjustedCrossEntropy` that replaces
            a plain ``nn.CrossEntropyLoss`` criterion (default 1.0, ours, not the
            paper's: it removes the new-class bias of replayed mini-batches, which
            distillation cannot; 0 keeps the criterion as given). Other criteria
            are used unchanged, with a warning.
        teacher_sample: distil the logits from only this many randomly drawn
            snapshots per mini-batch (an unbiased estimate of the sum over all, see
            :class:`~avalanche_m2kd.plugins.MultiModelDistillationPlugin`); ``None``
            (default) uses all.
        head_name: dotted name of the classifier head; found when ``None``.
        restore_released_at: ``nested`` mode: when weights released by pruning get
            their trained values back, ``"next_experience"`` (default) or
            ``"end_of_experience"`` (the model evaluated between experiences is then
            dense, not the sparse snapshot); see
            :class:`~avalanche_m2kd.plugins.SnapshotMaskingPlugin`.
        recalibrate_bn: ``nested`` mode: re-estimate the BatchNorm running
            statistics of the pruned model on the experience's training
            mini-batches before its snapshot is recorded (default True, ours); see
            :class:`~avalanche_m2kd.plugins.SnapshotMaskingPlugin`.
        teacher_dtype: autocast dtype of the teacher forwards: ``None`` (default,
            float32), ``torch.bfloat16`` (any device) or ``torch.float16`` (CUDA
            only; refused on CPU); teacher outputs come back as float32. Measured
            here: bf16 teachers made the ResNet-32 M2KD step with 9 teachers 0.58×
            as long, and cost 0.015 final accuracy on Split Fashion-MNIST 2+1 (with
            the feature term; level without it) — see the README's "Cost".
        cache_teachers: ``True`` (default, fastest) keeps every teacher dense for
            the experience; ``False`` rebuilds and frees them inside each step (at
            most one dense teacher at a time; about 17 ms per ResNet-32 teacher per
            step on our CPU).
        teacher_batching: how the teachers of one mini-batch run: ``"loop"``
            (default: one after the other, bit-exact nested teachers), ``"vmap"``
            (same-architecture teachers as one ``torch.func.vmap`` forward over their
            stacked weights, features captured too; holds a stacked copy of the
            teachers) or ``"streams"`` (each teacher on its own CUDA stream; the loop
            on a CPU). Batched losses equal the loop's to float rounding. Meant for
            CUDA; on our CPU vmap was slower than the loop. Needs
            ``cache_teachers=True``. See :mod:`avalanche_m2kd.batched_teachers`.
        mixed_precision: ``None`` (default: float32), ``torch.bfloat16`` or
            ``torch.float16``: the student's forward runs under ``torch.autocast`` on
            the strategy's device, the losses in float32; with float16 the loss is
            scaled by a ``torch.amp.GradScaler`` (kept in checkpoints). Teachers have
            their own setting.
        ddp_find_unused_parameters: passed to ``DistributedDataParallel`` under
            ``torchrun`` (default False, PyTorch's: no extra graph traversal per step;
            set True for a model whose forward leaves some parameters unused).
        check_finite: raise ``FloatingPointError`` as soon as the training loss is
            NaN or infinite, before the backward pass can spread it into the weights
            and the snapshots (default True; one host sync per step on CUDA).

    Attributes:
        snapshots: the :class:`~avalanche_m2kd.snapshots.SnapshotStore`.
        m2kd_config: every M2KD option as given (plain values); checkpoints
            (:mod:`avalanche_m2kd.checkpoint`) refuse to resume into a strategy
            whose options differ.

    Raises:
        ValueError: an unknown layer or head name, a multi-head model, or an option
            out of range — at construction, before any training.
        FloatingPointError: during training, a non-finite loss (``check_finite``).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        criterion: nn.Module = nn.CrossEntropyLoss(),
        train_mb_size: int = 1,
        train_epochs: int = 1,
        eval_mb_size: Optional[int] = None,
        device: Union[str, torch.device] = "cpu",
        plugins: Optional[Sequence[SupervisedPlugin]] = None,
        evaluator: Union[EvaluationPlugin, Callable[[], EvaluationPlugin]] = default_evaluator,
        eval_every: int = -1,
        peval_mode: str = "epoch",
        *,
        feature_layers: Optional[Sequence[str]] = None,
        mem_size: int = 2000,
        snapshot_mode: SnapshotMode = "nested",
        prune_ratio: Optional[PruneRatio] = None,
        post_prune_epochs: Optional[int] = None,
        temperature: float = 2.0,
        mm_weight: float = 1.0,
        feat_weight: float = 1.0,
        teacher_slice: TeacherSlice = "own",
        teachers: TeacherSet = "all",
        feature_loss: FeatureLoss = "normalized_mse",
        feature_teachers: TeacherSet = "last",
        teacher_bn: TeacherBatchNorm = "batch",
        logit_adjustment: float = 1.0,
        teacher_sample: Optional[int] = None,
        head_name: Optional[str] = None,
        restore_released_at: ReleasedRestore = "next_experience",
        recalibrate_bn: bool = True,
        teacher_dtype: Optional[torch.dtype] = None,
        cache_teachers: bool = True,
        teacher_batching: TeacherBatching = "loop",
        mixed_precision: Optional[torch.dtype] = None,
        ddp_find_unused_parameters: bool = False,
        check_finite: bool = True,
    ) -> None:
        head_name = find_head(model, head_name)
        _check_training_options(train_epochs, post_prune_epochs, device)
        check_choice(feature_loss, FeatureLoss, "feature_loss")
        check_choice(feature_teachers, TeacherSet, "feature_teachers")
        check_teacher_batching(teacher_batching, cache_teachers)
        for name, weight in (("mm_weight", mm_weight), ("feat_weight", feat_weight)):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"Expected argument `{name}` to be a number >= 0, but got {weight!r}")
        criterion = _adjusted(criterion, logit_adjustment)
        if feature_layers is not None:
            feature_layers = resolve_layer_specs(
                model, [feature_layers] if isinstance(feature_layers, str) else feature_layers
            )
        if isinstance(mem_size, bool) or not isinstance(mem_size, int) or mem_size < 0:
            raise ValueError(f"Expected argument `mem_size` to be an int >= 0, but got {mem_size!r}")
        self.m2kd_config: dict[str, Any] = {
            "feature_layers": None if feature_layers is None else list(feature_layers),
            "mem_size": mem_size,
            "snapshot_mode": snapshot_mode,
            "prune_ratio": list(prune_ratio) if isinstance(prune_ratio, (list, tuple)) else prune_ratio,
            "post_prune_epochs": post_prune_epochs,
            "temperature": temperature,
            "mm_weight": mm_weight,
            "feat_weight": feat_weight,
            "teacher_slice": teacher_slice,
            "teachers": teachers,
            "feature_loss": feature_loss,
            "feature_teachers": feature_teachers,
            "teacher_bn": teacher_bn,
            "logit_adjustment": logit_adjustment,
            "teacher_sample": teacher_sample,
            "head_name": head_name,
            "restore_released_at": restore_released_at,
            "recalibrate_bn": recalibrate_bn,
            "teacher_dtype": None if teacher_dtype is None else str(teacher_dtype),
            "cache_teachers": cache_teachers,
            "teacher_batching": teacher_batching,
            "mixed_precision": None if mixed_precision is None else str(mixed_precision),
        }
        self.masking = SnapshotMaskingPlugin(
            snapshot_mode,
            prune_ratio,
            post_prune_epochs,
            head_name=head_name,
            restore_released_at=restore_released_at,
            recalibrate_bn=recalibrate_bn,
        )
        store = self.masking.store
        m2kd: list[SupervisedPlugin] = [
            self.masking,
            SeenClassesMaskingPlugin(),
            MultiModelDistillationPlugin(
                temperature,
                mm_weight,
                teacher_slice,
                teachers,
                store=store,
                teacher_bn=teacher_bn,
                teacher_sample=teacher_sample,
                teacher_dtype=teacher_dtype,
                cache_teachers=cache_teachers,
                teacher_batching=teacher_batching,
            ),
        ]
        feature_plugin = MultiLevelDistillationPlugin(
            feature_layers,
            feature_loss,
            feature_teachers,
            feat_weight,
            store=store,
            head_name=head_name,
            teacher_bn=teacher_bn,
            teacher_dtype=teacher_dtype,
            teacher_batching=teacher_batching,
        )
        if feat_weight > 0:
            m2kd.append(feature_plugin)
        if mem_size > 0:
            buffer = ClassBalancedBuffer(mem_size, HeadInputHerding(head_name))
            m2kd.append(_ExemplarReplay(mem_size, storage_policy=buffer))
        super().__init__(
            model=model,
            optimizer=optimizer,
            criterion=criterion,
            train_mb_size=train_mb_size,
            train_epochs=train_epochs,
            eval_mb_size=eval_mb_size,
            device=device,
            plugins=m2kd + list(plugins or []),
            evaluator=evaluator,
            eval_every=eval_every,
            peval_mode=peval_mode,
            mixed_precision=mixed_precision,
            check_finite=check_finite,
            ddp_find_unused_parameters=ddp_find_unused_parameters,
        )

    @property
    def snapshots(self) -> SnapshotStore:
        """The :class:`~avalanche_m2kd.snapshots.SnapshotStore` (``len()``, ``teacher(k)``,
        ``nbytes()``, ``state_dict()``)."""
        return self.masking.store
