"""Training beside nested storage: owned weights frozen, the prune schedule, released weights."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from avalanche.training.plugins import SupervisedPlugin

from avalanche_m2kd.batchnorm import batch_norm_layers, recalibrate_batch_norm, running_stats
from avalanche_m2kd.keep_search import smallest_faithful_keep
from avalanche_m2kd.option_types import ReleasedRestore, SnapshotOptions
from avalanche_m2kd.pruning import FaithfulKeep, PruneRatio, keep_fraction
from avalanche_m2kd.rng import preserved_rng
from avalanche_m2kd.snapshots import SnapshotStore
from avalanche_m2kd.storage import NestedStorage
from avalanche_m2kd.stream import experience_classes, stream_length

__all__ = ["NestedTrainingPlugin", "ReleasedRestore", "leading_batches"]


#: The snapshot options' defaults, which this plugin's keywords of the same names take.
_DEFAULT = SnapshotOptions()


def leading_batches(loader: Iterable[Any], samples: int | None) -> Iterator[Any]:
    """The mini-batches of one pass over ``loader``, whole, until at least ``samples``
    samples (counted on each mini-batch's first element); ``None``: the whole pass.
    The pass stops there: later mini-batches are not loaded.

    Example:
        >>> loader = [(torch.zeros(4, 2), torch.zeros(4)) for _ in range(5)]
        >>> len(list(leading_batches(loader, 9))), len(list(leading_batches(loader, None)))
        (3, 5)
    """
    seen = 0
    for mb in loader:
        yield mb
        seen += len(mb[0])
        if samples is not None and seen >= samples:
            return


# Avalanche types no `__init_subclass__` keyword: mypy does not know `supports_distributed`.
class NestedTrainingPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """Keeps a model trainable while nested storage keeps every snapshot inside it.

    Lifecycle, for a store with :class:`~avalanche_m2kd.storage.NestedStorage`:

    * ``before_training_exp``: checks that every prunable layer still has free
      weights and that nothing changed the owned weights since the last snapshot;
      only free weights train.
    * ``after_backward`` / ``after_update``: gradients of owned weights are zeroed
      and, after the optimizer step, owned (and released) weights are restored
      exactly — so momentum, weight decay or Adam state cannot move them.
    * after epoch ``train_epochs - post_prune_epochs``: the free weights are pruned
      per layer by magnitude (:meth:`NestedStorage.prune
      <avalanche_m2kd.storage.NestedStorage.prune>`, with ``prune_ratio``'s
      schedule); the remaining epochs fine-tune the kept weights with the released
      ones held at zero.
    * :meth:`before_record`: the frozen and released weights are set back to their
      held values (whatever another plugin loaded meanwhile, e.g. Avalanche's
      ``EarlyStoppingPlugin`` restoring its best, pre-pruning weights), the model
      is pruned if no epoch did it, and the BatchNorm running statistics are
      re-estimated for the pruned weights (``recalibrate_bn``).
    * :meth:`after_record`: the owned weights' fingerprint is kept (the next
      experience refuses to start if something changed them), and the released
      weights get their trained values back now or at the next experience
      (``warm_start_released``, ``restore_released_at``); back now, the dense
      model's BatchNorm statistics are re-estimated too (``recalibrate_bn``).

    :class:`~avalanche_m2kd.plugins.SnapshotMaskingPlugin` builds this plugin for
    nested storage, forwards its hooks and records the snapshot between
    :meth:`before_record` and :meth:`after_record`; do not add it to a strategy
    beside that plugin.

    Args:
        store: the store, with nested storage.
        prune_ratio: the schedule: a
            :class:`~avalanche_m2kd.pruning.FaithfulKeep` (default, ours: as little
            as each snapshot's accuracy on its classes allows, at most the fair
            share), ``"fair"`` (ours: every experience keeps ``1/N`` of each layer),
            a float in ``[0, 1)`` (the fraction of the free weights each experience
            releases, the paper's fixed-ratio schedule) or one float per
            experience. ``FaithfulKeep`` and ``"fair"`` need the stream length.
        post_prune_epochs: epochs of fine-tuning after pruning, taken from the
            experience's ``train_epochs``; default ``train_epochs // 4`` (ours).
        n_experiences: stream length for ``FaithfulKeep`` and ``"fair"`` when the
            experiences do not know their stream.
        warm_start_released: the weights released by pruning restart the next
            experience from their trained values instead of zero (default True,
            ours; the paper does not say). Snapshots are unaffected: released
            weights are outside every earlier snapshot's mask.
        restore_released_at: with ``warm_start_released``, when the released
            weights get their trained values back. ``"end_of_experience"``
            (default, ours): right after the snapshot is recorded, so the model
            evaluated between experiences (and the one exemplars are picked with)
            is the dense one; ``"next_experience"``: at the start of the next
            experience, so between experiences the live model is the sparse
            snapshot. Snapshots and the next experience's starting weights are the
            same either way.
        recalibrate_bn: before the snapshot is recorded, re-estimate the BatchNorm
            running statistics of the pruned model on one pass over the
            experience's training mini-batches (new and replayed samples, as
            trained), so that the snapshot, the model evaluated between
            experiences, herding and eval-mode teachers do not normalise with the
            dense model's statistics; with ``restore_released_at="end_of_experience"``
            they are re-estimated once more for the dense model after the snapshot
            is recorded. Default True (ours).
        recalibrate_samples: each of those re-estimations uses the first
            mini-batches of a pass over the loader (which shuffles: a random
            subset), whole mini-batches until at least this many samples, an int >=
            1 (default 512, ours); ``None``: the whole pass.

    Attributes:
        keep_searches: with a ``FaithfulKeep``, one entry per pruning: the
            ``experience``, the ``keep`` chosen, the ``dense`` model's accuracy on
            its classes and the ``tried`` keeps with their accuracies.

    Raises:
        ValueError: an option out of range, or a store without nested storage.
    """

    def __init__(
        self,
        store: SnapshotStore,
        prune_ratio: PruneRatio = FaithfulKeep(),  # noqa: B008 - frozen, shared safely
        post_prune_epochs: int | None = _DEFAULT.post_prune_epochs,
        n_experiences: int | None = None,
        warm_start_released: bool = True,
        restore_released_at: ReleasedRestore = _DEFAULT.restore_released_at,
        recalibrate_bn: bool = _DEFAULT.recalibrate_bn,
        recalibrate_samples: int | None = _DEFAULT.recalibrate_samples,
    ) -> None:
        super().__init__()
        SnapshotOptions(  # validates them, as the strategy's keywords of the same names
            prune_ratio=prune_ratio, post_prune_epochs=post_prune_epochs,
            restore_released_at=restore_released_at, recalibrate_bn=recalibrate_bn,
            recalibrate_samples=recalibrate_samples,
        )
        if not isinstance(store.storage, NestedStorage):
            raise ValueError(
                f"Expected argument `store` to have nested storage, but it has {store.storage!r}"
            )
        self.store, self.storage = store, store.storage
        self.prune_ratio = prune_ratio
        self.post_prune_epochs = post_prune_epochs
        self.n_experiences = n_experiences
        self.warm_start_released = warm_start_released
        self.restore_released_at = restore_released_at
        self.recalibrate_bn = recalibrate_bn
        self.recalibrate_samples = recalibrate_samples
        self._trainable: dict[str, torch.Tensor] = {}
        self._held: dict[str, torch.Tensor] = {}
        self._released: dict[str, torch.Tensor] = {}
        self._fingerprint: dict[str, torch.Tensor] | None = None
        self.keep_searches: list[dict[str, Any]] = []
        self._epoch = 0
        self._pruned = False

    # ----------------------------------------------------------------- helpers
    def _prune_epoch(self, strategy: Any) -> int:
        post = (
            strategy.train_epochs // 4 if self.post_prune_epochs is None else self.post_prune_epochs
        )
        if post >= strategy.train_epochs:
            raise ValueError(
                f"post_prune_epochs={post} leaves no epoch to train before pruning with "
                f"train_epochs={strategy.train_epochs}: use post_prune_epochs < train_epochs"
            )
        return strategy.train_epochs - post

    def _hold(self, model: torch.nn.Module, trainable: dict[str, torch.Tensor]) -> None:
        """Train only ``trainable`` entries; hold the others at their current value."""
        params = dict(model.named_parameters())
        self._trainable = {n: m for n, m in trainable.items() if not bool(m.all())}
        self._held = {n: params[n].detach().clone() for n in self._trainable}

    @torch.no_grad()
    def _reapply_held(self, model: torch.nn.Module) -> None:
        """Set every weight that must not train back to its held value.

        Runs after every optimizer step (so momentum, weight decay or Adam state
        cannot move them) and once more before recording: a plugin that loads
        weights (a best-model reload) without a step after it would otherwise leave
        frozen or released weights changed.
        """
        if not self._trainable:
            return
        params = dict(model.named_parameters())
        for name, mask in self._trainable.items():
            p = params[name]
            p.copy_(torch.where(mask, p, self._held[name]))

    @torch.no_grad()
    def _owned_fingerprint(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Per layer, two float64 sums of the owned weights (plain, position-weighted):
        any change of an owned weight changes them (unless it cancels exactly)."""
        params = dict(model.named_parameters())
        out = {}
        for name, owner in self.storage.owners.items():
            w = params[name].detach().reshape(-1).double()
            owned = owner.reshape(-1).to(w.device) > 0
            position = torch.arange(1, w.numel() + 1, dtype=torch.float64, device=w.device)
            w = torch.where(owned, w, torch.zeros((), dtype=w.dtype, device=w.device))
            out[name] = torch.stack([w.sum(), (w * position).sum()])
        return out

    def _check_owned_unchanged(self, strategy: Any) -> None:
        if self._fingerprint is None:
            return
        now = self._owned_fingerprint(strategy.model)
        changed = [
            n for n, f in self._fingerprint.items() if not torch.equal(f, now[n].to(f.device))
        ]
        if changed:
            raise RuntimeError(
                f"Weights of the {len(self.store)} nested snapshot(s) changed after they were "
                f"recorded, in {len(changed)} layer(s) (e.g. {changed[0]!r}): the nested "
                "store keeps every snapshot inside the live model's weights, so nothing may "
                "modify them between experiences (a best-model reload or load_state_dict "
                "placed after M2KD's plugins, a weight initialiser, ...). Load weights during "
                "the experience (EarlyStoppingPlugin is supported), resume with "
                "avalanche_m2kd.checkpoint, or use snapshot_mode='full'"
            )

    def _check_room(self) -> None:
        """Every prunable layer must keep free weights for the experience that starts."""
        full = [n for n, f in self.storage.free_fractions().items() if f == 0.0]
        if full:
            raise RuntimeError(
                "The nested snapshot store has no free weights left for experience "
                f"{len(self.store)} in {len(full)} layer(s) (e.g. {full[0]!r}): earlier "
                "experiences kept them all. Use prune_ratio='fair' (shares each layer over "
                "the stream), a larger "
                "prune_ratio, or snapshot_mode='pruned' / 'full'"
            )

    def _recalibrate(self, strategy: Any) -> None:
        """Re-estimate BatchNorm statistics on the experience's training mini-batches."""
        loader = getattr(strategy, "dataloader", None)
        if loader is None:
            return
        device = strategy.device
        batches = leading_batches(loader, self.recalibrate_samples)
        n = recalibrate_batch_norm(strategy.model, (mb[0].to(device) for mb in batches))
        if n and dist.is_available() and dist.is_initialized():  # every rank takes rank 0's
            for layer in batch_norm_layers(strategy.model):
                for buffer in running_stats(layer):  # mean, var, count: never None here
                    dist.broadcast(buffer, src=0)

    @torch.no_grad()
    def _restore_released(self, model: torch.nn.Module) -> bool:
        """Give the weights released at the last pruning their trained values back;
        whether there were any."""
        params = dict(model.named_parameters())
        for name, values in self._released.items():
            params[name].add_(values.to(params[name].device))  # released entries are zero
        restored, self._released = bool(self._released), {}
        return restored

    def _faithful_keep(self, strategy: Any, schedule: FaithfulKeep, t: int, n: int) -> float:
        """The keep :class:`~avalanche_m2kd.pruning.FaithfulKeep` measures (rank 0's
        under ``torch.distributed``); its measurements go to ``keep_searches``."""
        keeps = schedule.keeps(t, n)
        loader = getattr(strategy, "dataloader", None)
        if len(keeps) == 1 or loader is None:
            return keeps[-1]
        with preserved_rng():  # the pass over the loader draws nothing from the run's
            batches = [
                (mb[0].to(strategy.device), mb[1].to(strategy.device))
                for mb in leading_batches(loader, schedule.samples)
            ]
        own = experience_classes(strategy.experience)
        seen = {c for classes in self.store.classes for c in classes} | set(own)
        search = smallest_faithful_keep(
            strategy.model, self.storage.owners, t + 1, keeps, batches, own,
            schedule.max_drop, seen,
        )
        keep = search.keep
        if dist.is_available() and dist.is_initialized():  # every rank prunes alike
            chosen = torch.tensor([keep], dtype=torch.float64, device=strategy.device)
            dist.broadcast(chosen, src=0)
            keep = float(chosen.item())
        self.keep_searches.append({"experience": t, **search.as_dict(), "keep": keep})
        return keep

    def _prune(self, strategy: Any) -> None:
        t = len(self.store)
        n = self.n_experiences or stream_length(strategy.experience)
        if isinstance(self.prune_ratio, FaithfulKeep):
            assert n is not None  # checked when the experience started
            keep = self._faithful_keep(strategy, self.prune_ratio, t, n)
        else:
            keep = keep_fraction(self.prune_ratio, t, n)
        if self.warm_start_released:
            params = dict(strategy.model.named_parameters())
            before = {n: params[n].detach().clone() for n in self.store.prunable}
        # Through the store (its alias binds if needed), so that a wrapper set on
        # store.prune, as benchmarks/snapshot_fidelity.py sets one, sees every pruning.
        released = self.store.prune(strategy.model, t, keep)
        if self.warm_start_released:
            self._released = {n: torch.where(m, before[n], 0.0) for n, m in released.items()}
        self._hold(strategy.model, {n: o == t + 1 for n, o in self.storage.owners.items()})
        self._pruned = True

    # -------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The trained values of the weights released at the last pruning (with
        ``warm_start_released``, they restart the next experience; CPU tensors) and
        ``keep_searches``."""
        return {
            "released": {n: t.detach().cpu() for n, t in self._released.items()},
            "keep_searches": [dict(s) for s in self.keep_searches],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (between experiences)."""
        self._released = dict(state["released"])
        self.keep_searches = [dict(s) for s in state.get("keep_searches", [])]
        self._trainable, self._held = {}, {}
        self._fingerprint = None  # the loaded weights are the reference

    # ------------------------------------------------------------------- hooks
    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        """Check the schedule and the free weights; restore released weights; freeze
        the owned ones. The store must be bound to ``strategy.model``."""
        self._epoch, self._pruned = 0, False
        self._prune_epoch(strategy)
        if (
            (self.prune_ratio == "fair" or isinstance(self.prune_ratio, FaithfulKeep))
            and self.n_experiences is None
            and stream_length(strategy.experience) is None
        ):
            raise ValueError(
                f"prune_ratio={self.prune_ratio!r} needs the stream length, which this "
                "experience does not know: pass n_experiences= or a float prune_ratio"
            )
        self._check_room()
        self._check_owned_unchanged(strategy)
        self._restore_released(strategy.model)
        self._hold(strategy.model, self.storage.free_masks())

    def after_backward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        """Zero the gradients of the weights that must not train."""
        if not self._trainable:
            return
        params = dict(strategy.model.named_parameters())
        for name, mask in self._trainable.items():
            grad = params[name].grad
            if grad is not None:
                grad.mul_(mask)

    def after_update(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        """Set the weights that must not train back to their held values."""
        self._reapply_held(strategy.model)

    def after_training_epoch(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        """Prune after epoch ``train_epochs - post_prune_epochs``."""
        self._epoch += 1
        if not self._pruned and self._epoch == self._prune_epoch(strategy):
            self._prune(strategy)

    def before_record(self, strategy: Any) -> None:
        """Ready the live model to be recorded as the experience's snapshot."""
        self._reapply_held(strategy.model)  # a reload since the last step
        if not self._pruned:
            self._prune(strategy)  # early stopping, or no post-prune epoch
        if self.recalibrate_bn:
            self._recalibrate(strategy)
        self._trainable, self._held = {}, {}

    def after_record(self, strategy: Any) -> None:
        """Keep the owned weights' fingerprint; restore the released weights now if
        ``restore_released_at="end_of_experience"``."""
        self._fingerprint = self._owned_fingerprint(strategy.model)
        if self.restore_released_at != "end_of_experience":
            return
        # After recording, so the snapshots are unchanged. The statistics were
        # re-estimated for the sparse snapshot: the dense model needs its own. The
        # pass leaves the generators as they were (the loader shuffles), so that the
        # rest of the run, snapshots included, is the same as with "next_experience".
        if self._restore_released(strategy.model) and self.recalibrate_bn:
            with preserved_rng():
                self._recalibrate(strategy)
