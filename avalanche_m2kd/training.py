"""Training parts for any Avalanche strategy: torchrun, mixed precision, a finite-loss check.

Nothing here is M2KD's: :class:`TrainingMixin` goes in front of any subclass of
Avalanche's ``SupervisedTemplate`` (``Naive``, ``LwF``, ``Replay``, ...)::

    class RobustNaive(TrainingMixin, Naive):
        pass

    strategy = RobustNaive(model=model, optimizer=optimizer, criterion=criterion,
                           mixed_precision=torch.bfloat16, check_finite=True)

:class:`~avalanche_m2kd.M2KDStrategy` is built the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from avalanche.benchmarks.utils.data_loader import SingleDatasetDataLoader
from avalanche.distributed import DistributedHelper
from torch.nn.parallel import DistributedDataParallel

__all__ = ["TrainingMixin", "validate_mixed_precision"]

_MIXED = (None, torch.bfloat16, torch.float16)

if TYPE_CHECKING:
    # For the checker only: the mixin's ``self`` is a template's (``self.model``, ``self.mb_x``,
    # ``super().forward()``, ...). At run time it derives from ``object`` and comes first
    # among the bases of an Avalanche template subclass.
    from avalanche.training.templates import SupervisedTemplate as _Template
else:
    _Template = object


def validate_mixed_precision(dtype: torch.dtype | None) -> torch.dtype | None:
    """The checked ``mixed_precision`` (``None``: float32 training).

    Raises:
        ValueError: anything but ``None``, ``torch.bfloat16`` or ``torch.float16``.

    Example:
        >>> validate_mixed_precision(torch.bfloat16)
        torch.bfloat16
    """
    if dtype not in _MIXED:
        raise ValueError(
            "Expected argument `mixed_precision` to be None, torch.bfloat16 or "
            f"torch.float16, but got {dtype!r}"
        )
    return dtype


class TrainingMixin(_Template):
    """Multi-process training, mixed precision and a NaN guard for an Avalanche template.

    Put it first among the bases of a ``SupervisedTemplate`` subclass; it takes three
    keyword arguments and passes everything else on.

    * **torchrun** (after Avalanche's ``DistributedHelper.init_distributed(...)``):
      Avalanche 0.6.0 shards the training data but never wraps the model in
      ``DistributedDataParallel``. The mixin does, for the training forward only, and
      again at every experience after model adaptation (head units an
      ``IncrementalClassifier`` adds are then in the gradient sync);
      ``strategy.model`` stays the plain module. At the end of each experience every
      rank takes rank 0's buffers (BatchNorm statistics), before the plugins'
      ``after_training_exp``. Evaluation runs over the whole set on every rank
      (Avalanche shards it and never reduces the metrics), so every metric is the
      one-process value on every rank.
    * **mixed precision**: the forward under ``torch.autocast`` on the strategy's
      device, its output returned as float32 (losses in full precision); float16
      adds a ``torch.amp.GradScaler`` (``grad_scaler``).
    * **finite-loss check**: a NaN / inf loss raises ``FloatingPointError`` before the
      backward pass, naming experience, epoch, iteration and the likely cause.

    Args:
        mixed_precision: ``None`` (float32), ``torch.bfloat16`` or ``torch.float16``.
        check_finite: raise on a non-finite loss (one host sync per step on CUDA).
        ddp_find_unused_parameters: passed to ``DistributedDataParallel``.
        *args, **kwargs: the template's own arguments.

    Attributes:
        grad_scaler: the ``torch.amp.GradScaler`` of float16 ``mixed_precision``
            (kept in checkpoints), else ``None``.
    """

    def __init__(
        self,
        *args: Any,
        mixed_precision: torch.dtype | None = None,
        check_finite: bool = True,
        ddp_find_unused_parameters: bool = False,
        **kwargs: Any,
    ) -> None:
        self.mixed_precision = validate_mixed_precision(mixed_precision)
        self.check_finite = check_finite
        self.ddp_find_unused_parameters = ddp_find_unused_parameters
        self._ddp: DistributedDataParallel | None = None
        super().__init__(*args, **kwargs)
        self.grad_scaler: torch.amp.GradScaler | None = (
            torch.amp.GradScaler(self.device.type) if mixed_precision == torch.float16 else None
        )

    # ------------------------------------------------------------ distributed
    def _before_training_exp(self, **kwargs: Any) -> None:
        super()._before_training_exp(**kwargs)  # adapts the model, then the plugins
        self._ddp = None
        if DistributedHelper.is_distributed:
            on_gpu = self.device.type == "cuda"
            self._ddp = DistributedDataParallel(
                self.model,
                device_ids=[self.device] if on_gpu else None,
                find_unused_parameters=self.ddp_find_unused_parameters,
            )

    def forward(self) -> Any:
        """The model's output: through the DDP wrapper while training distributed,
        under ``torch.autocast`` with ``mixed_precision`` (returned as float32)."""
        if self.mixed_precision is None:
            return self._forward()
        with torch.autocast(self.device.type, dtype=self.mixed_precision):
            output = self._forward()
        return output.float() if isinstance(output, torch.Tensor) else output

    def _forward(self) -> Any:
        if self._ddp is not None and self.is_training:
            return self._ddp(self.mb_x)
        return super().forward()

    def _after_training_exp(self, **kwargs: Any) -> None:
        if self._ddp is not None:
            self._ddp = None  # its gradient hooks go with it; the next experience rewraps
            with torch.no_grad():
                for buffer in self.model.buffers():
                    dist.broadcast(buffer, src=0)
        super()._after_training_exp(**kwargs)  # plugins (e.g. snapshot recording) after

    def make_eval_dataloader(self, **kwargs: Any) -> None:
        """Avalanche's evaluation loader; under ``torchrun``, over the whole dataset on
        every rank.

        Avalanche 0.6.0 shards evaluation data with a padded ``DistributedSampler``
        and never reduces the metrics: each rank, and the loggers on rank 0, would
        report the accuracy (loss, forgetting, ...) of its own shard, with repeated
        samples where the set does not split evenly. Every rank evaluates the whole
        set instead, in the order of one process, so every metric of any evaluator
        is that of one process and the ranks agree by construction (so do decisions
        taken from metrics, e.g. early stopping). Evaluation is then not faster with
        more processes; training still is.
        """
        super().make_eval_dataloader(**kwargs)
        if DistributedHelper.is_distributed:
            sharded = self.dataloader
            self.dataloader: Any = SingleDatasetDataLoader(  # Avalanche's loaders: untyped
                self.adapted_dataset,
                self.eval_mb_size,
                distributed_sampling=False,
                ffcv_args=sharded.ffcv_args,
                **sharded.loader_kwargs,
            )

    # ----------------------------------------------------- precision and guard
    def backward(self) -> None:
        """The backward pass, after checking the loss is finite (``check_finite``)."""
        if self.check_finite and not bool(torch.isfinite(self.loss).all()):
            raise FloatingPointError(self._non_finite_message())
        if self.grad_scaler is None:
            super().backward()
        else:
            self.grad_scaler.scale(self.loss).backward(retain_graph=self.retain_graph)

    def optimizer_step(self) -> None:
        """The optimizer step; through the ``GradScaler`` with float16 ``mixed_precision``."""
        if self.grad_scaler is None:
            super().optimizer_step()
        else:
            self.grad_scaler.step(self.optimizer)  # skipped when the scaled gradients overflowed
            self.grad_scaler.update()

    def _non_finite_message(self) -> str:
        clock = self.clock
        x = self.mb_x
        inputs_ok = bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else True
        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if not inputs_ok:
            cause = "the mini-batch inputs contain NaN or inf: check the dataset and its transforms"
        elif bad:
            cause = (
                f"{len(bad)} model parameter(s) are already non-finite (e.g. {bad[0]!r}): the "
                "training diverged earlier; lower the learning rate or clip gradients"
            )
        else:
            cause = (
                "inputs and weights are finite, so a loss term overflowed: lower the learning "
                "rate, raise `temperature` if the distillation term explodes, or clip gradients"
            )
        return (
            f"The training loss is {float(self.loss.detach().sum())} at experience "
            f"{clock.train_exp_counter}, epoch {clock.train_exp_epochs}, iteration "
            f"{clock.train_epoch_iterations}: {cause}. Nothing was updated with it; a "
            "checkpoint saved before (avalanche_m2kd.checkpoint) is still good. Pass "
            "check_finite=False to train on regardless."
        )
