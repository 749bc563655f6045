"""The snapshot store as a plugin: a snapshot recorded after every experience."""

from __future__ import annotations

from typing import Any

from avalanche.training.plugins import SupervisedPlugin

from avalanche_m2kd.features import check_head
from avalanche_m2kd.option_types import SnapshotOptions
from avalanche_m2kd.plugins.nested_training import (
    NestedTrainingPlugin,
    ReleasedRestore,
)
from avalanche_m2kd.pruning import FaithfulKeep, PruneRatio, validate_prune_ratio
from avalanche_m2kd.snapshots import SnapshotStore
from avalanche_m2kd.storage import (
    NestedStorage,
    PrunedStorage,
    SnapshotMode,
    SnapshotStorage,
    make_storage,
)
from avalanche_m2kd.stream import check_class_incremental, experience_classes, probe_input

__all__ = ["ReleasedRestore", "SnapshotMaskingPlugin", "default_prune_ratio"]


#: The snapshot options' defaults, which this plugin's keywords take (``mode`` is
#: ``snapshot_mode``).
_DEFAULT = SnapshotOptions()


def default_prune_ratio(mode: SnapshotMode | SnapshotStorage) -> PruneRatio:
    """What ``prune_ratio=None`` means with storage ``mode``: ``FaithfulKeep()`` with
    nested storage (avalanche-m2kd 0.1: ``"fair"``), else 0.5 (a ``PrunedStorage``
    object brings its own density)."""
    if isinstance(mode, PrunedStorage):
        return 1.0 - mode.density
    nested = mode == "nested" if isinstance(mode, str) else isinstance(mode, NestedStorage)
    return FaithfulKeep() if nested else 0.5


def _resolve(
    mode: SnapshotMode | SnapshotStorage, prune_ratio: PruneRatio | None
) -> tuple[SnapshotStorage, PruneRatio]:
    """The storage and the resolved ``prune_ratio`` of the plugin's arguments.

    ``prune_ratio`` is the nested schedule with nested storage (default
    ``FaithfulKeep()``, ours); with ``"pruned"`` it is ``1 - density`` of the
    :class:`~avalanche_m2kd.storage.PrunedStorage` made (default 0.5, ours); a
    ``PrunedStorage`` object brings its own density; full storage does not use it.
    """
    if isinstance(mode, PrunedStorage) and prune_ratio is not None:
        raise ValueError(
            "Expected argument `prune_ratio` to be None with a PrunedStorage object, but "
            f"got {prune_ratio!r}: its `density` says what each snapshot keeps"
        )
    if prune_ratio is None:
        prune_ratio = default_prune_ratio(mode)
    validate_prune_ratio(prune_ratio)
    density = None
    if isinstance(mode, str) and mode == "pruned":
        if isinstance(prune_ratio, (str, bool)) or not isinstance(prune_ratio, (int, float)):
            raise ValueError(
                "Expected argument `prune_ratio` to be a float in [0, 1) with "
                f"snapshot_mode='pruned', but got {prune_ratio!r}"
            )
        density = 1.0 - prune_ratio
    return make_storage(mode, density), prune_ratio


def _nested_option(name: str) -> property:
    """An attribute of the plugin that is ``name`` of its :class:`NestedTrainingPlugin`
    (when it has one; else kept on the plugin, unused)."""

    def get(self: SnapshotMaskingPlugin) -> Any:
        if self.nested_training is not None:
            return getattr(self.nested_training, name)
        return self._options[name]

    def set_(self: SnapshotMaskingPlugin, value: Any) -> None:
        if self.nested_training is not None:
            setattr(self.nested_training, name, value)
        else:
            self._options[name] = value

    return property(get, set_, doc=f"The nested training's ``{name}`` (see the class's Args).")


# Avalanche types no `__init_subclass__` keyword: mypy does not know `supports_distributed`.
class SnapshotMaskingPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """Records every finished experience's model in a :class:`SnapshotStore`.

    * ``before_training_exp``: checks that the stream is class-incremental, binds
      the store to the model and, before the first snapshot, that the head is the
      module producing the output.
    * ``after_training_exp``: records the model as the experience's snapshot.

    With nested storage (the default) the plugin also builds a
    :class:`~avalanche_m2kd.plugins.NestedTrainingPlugin` (:attr:`nested_training`)
    and forwards its hooks to it: only free weights train, the free weights are
    pruned on a schedule, and the model is made ready before it is recorded (that
    plugin's docstring has the lifecycle). With pruned and full storage nothing is
    frozen: the finished model is stored (pruned, or whole).

    Put this plugin *before* a replay plugin so the exemplars are chosen with the
    pruned model (``M2KDStrategy`` does).

    Args:
        mode: the storage: ``"nested"`` (default: the paper's memory idea),
            ``"pruned"``, ``"full"`` (made by
            :func:`~avalanche_m2kd.storage.modes.make_storage`), or a
            :class:`~avalanche_m2kd.storage.SnapshotStorage` object.
        prune_ratio: with nested storage, :class:`NestedTrainingPlugin`'s schedule
            (default ``FaithfulKeep()``). With ``"pruned"``, the fraction of weights dropped
            from each stored snapshot, a float in ``[0, 1)``: the storage's
            ``density`` is ``1 - prune_ratio`` (default 0.5, ours). ``None`` with a
            ``PrunedStorage`` object (its ``density`` says it).
        post_prune_epochs: nested: see :class:`NestedTrainingPlugin`.
        head_name: the classifier head, found automatically when ``None``.
        n_experiences: nested: see :class:`NestedTrainingPlugin`.
        warm_start_released: nested: see :class:`NestedTrainingPlugin`.
        restore_released_at: nested: see :class:`NestedTrainingPlugin`.
        recalibrate_bn: nested: see :class:`NestedTrainingPlugin`.
        recalibrate_samples: nested: see :class:`NestedTrainingPlugin`.

    The nested options are checked whatever the storage, and are attributes of this
    plugin (setting one sets the nested training's).

    Attributes:
        store: the :class:`SnapshotStore` (share it with the distillation plugins).
        mode: the storage's name.
        nested_training: the :class:`NestedTrainingPlugin` of nested storage, or
            ``None``.
    """

    prune_ratio = _nested_option("prune_ratio")
    post_prune_epochs = _nested_option("post_prune_epochs")
    n_experiences = _nested_option("n_experiences")
    warm_start_released = _nested_option("warm_start_released")
    restore_released_at = _nested_option("restore_released_at")
    recalibrate_bn = _nested_option("recalibrate_bn")
    recalibrate_samples = _nested_option("recalibrate_samples")

    def __init__(
        self,
        mode: SnapshotMode | SnapshotStorage = _DEFAULT.snapshot_mode,
        prune_ratio: PruneRatio | None = _DEFAULT.prune_ratio,
        post_prune_epochs: int | None = _DEFAULT.post_prune_epochs,
        head_name: str | None = None,
        n_experiences: int | None = None,
        warm_start_released: bool = True,
        restore_released_at: ReleasedRestore = _DEFAULT.restore_released_at,
        recalibrate_bn: bool = _DEFAULT.recalibrate_bn,
        recalibrate_samples: int | None = _DEFAULT.recalibrate_samples,
    ) -> None:
        super().__init__()
        storage, prune_ratio = _resolve(mode, prune_ratio)
        options: dict[str, Any] = {
            "prune_ratio": prune_ratio,
            "post_prune_epochs": post_prune_epochs,
            "n_experiences": n_experiences,
            "warm_start_released": warm_start_released,
            "restore_released_at": restore_released_at,
            "recalibrate_bn": recalibrate_bn,
            "recalibrate_samples": recalibrate_samples,
        }
        self.store = SnapshotStore(storage, head_name=head_name)
        self.mode = storage.mode
        self.nested_training: NestedTrainingPlugin | None = None
        self._options: dict[str, Any] = {}
        if isinstance(storage, NestedStorage):
            self.nested_training = NestedTrainingPlugin(self.store, **options)
        else:
            SnapshotOptions(  # validates them, as the strategy's keywords of the same names
                post_prune_epochs=post_prune_epochs,
                restore_released_at=restore_released_at, recalibrate_bn=recalibrate_bn,
                recalibrate_samples=recalibrate_samples,
            )
            self._options = options

    def _forward(self, hook: str, strategy: Any) -> None:
        if self.nested_training is not None:
            getattr(self.nested_training, hook)(strategy)

    # -------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """What resuming after the last finished experience needs.

        The store's :meth:`~SnapshotStore.state_dict` and, with nested storage, the
        trained values of the weights released at the last pruning (with
        ``warm_start_released`` they restart the next experience) and
        the nested plugin's ``keep_searches``. Tensors and plain values only
        (``torch.load(weights_only=True)`` reads it).
        """
        nested = self.nested_training.state_dict() if self.nested_training else {}
        return {
            "store": self.store.state_dict(),
            "released": nested.get("released", {}),
            "keep_searches": nested.get("keep_searches", []),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (between experiences)."""
        self.store.load_state_dict(state["store"])
        if self.nested_training is not None:
            self.nested_training.load_state_dict({
                "released": state["released"],
                "keep_searches": state.get("keep_searches", []),  # absent before 0.2
            })

    # ------------------------------------------------------------------- hooks
    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        check_class_incremental(strategy.experience, self.store.classes)
        self.store.bind(strategy.model)
        if len(self.store) == 0:  # the head must be the module producing the output
            probe = probe_input(strategy.experience, strategy.device)
            assert self.store.head_name is not None  # store.bind() above set it
            check_head(strategy.model, self.store.head_name, probe)
        self._forward("before_training_exp", strategy)

    def after_backward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self._forward("after_backward", strategy)

    def after_update(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self._forward("after_update", strategy)

    def after_training_epoch(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self._forward("after_training_epoch", strategy)

    def after_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self._forward("before_record", strategy)
        self.store.record(strategy.model, experience_classes(strategy.experience))
        self._forward("after_record", strategy)
