"""The teacher runner every distillation plugin is built on: where teachers come from, how they run.

:class:`TeacherPlugin` is public: subclass it to distil from the snapshots with another
loss (implement :meth:`TeacherPlugin.teacher_outputs` and add the loss in
``before_backward`` from :meth:`TeacherPlugin.pending_outputs`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch
from avalanche.training.plugins import SupervisedPlugin
from torch import Tensor

from avalanche_m2kd.batched_teachers import TeacherBatching
from avalanche_m2kd.features import check_head
from avalanche_m2kd.option_types import (
    PLUGIN_TEACHER_OPTIONS,
    DistillationOptions,
    TeacherOptions,
    TeacherSet,
    check_option_keywords,
    option_keywords,
)
from avalanche_m2kd.snapshots import SnapshotStore, TeacherBatchNorm, validate_teacher_dtype
from avalanche_m2kd.stream import check_class_incremental, experience_classes, probe_input

__all__ = ["TeacherPlugin", "TeacherSet"]

_Plugin = TypeVar("_Plugin", bound="TeacherPlugin")


# Avalanche types no `__init_subclass__` keyword: mypy does not know `supports_distributed`.
class TeacherPlugin(SupervisedPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """Base of the distillation plugins: their :class:`SnapshotStore` and how its teachers run.

    With ``store=None`` the plugin works on its own: it keeps a private ``"full"``
    store, checks that the stream is class-incremental and records a snapshot after
    each experience. With a shared store (e.g. ``SnapshotMaskingPlugin(...).store``),
    the plugin only reads it: whoever owns the store records the snapshots.

    How the teachers run is one :class:`~avalanche_m2kd.option_types.TeacherOptions`
    (``teacher_options``), given as ``teacher_options`` or made from the flat
    keywords (giving both, with a keyword off its default, is refused). Two plugins
    given the same object cannot disagree on it; the store keeps each teacher's
    outputs for the training step (:meth:`SnapshotStore.run_teachers`), so a teacher
    two plugins share runs once per mini-batch, in either order.

    Args:
        store: a shared :class:`SnapshotStore`; ``None`` keeps a private full-copy one.
        head_name: the classifier head, for a private store (found if ``None``).
        teacher_options: how the teachers run, as one object (default ``None``: made
            from the keywords).
        **options: the fields of :class:`~avalanche_m2kd.option_types.TeacherOptions`
            (``teacher_bn``, ``teacher_dtype``, ``cache_teachers``,
            ``teacher_batching``), which describes them, keyword only, with its
            defaults but ``cache_teachers=None``
            (:data:`~avalanche_m2kd.option_types.PLUGIN_TEACHER_OPTIONS`: the store's
            caching is left as it is). When caching is off, the plugin frees the
            teachers the store holds after every training iteration.

    Attributes:
        teacher_options: the :class:`~avalanche_m2kd.option_types.TeacherOptions` the
            teachers run with (``teacher_bn``, ``teacher_dtype`` and
            ``teacher_batching`` read it).
    """

    @option_keywords(PLUGIN_TEACHER_OPTIONS)
    def __init__(
        self,
        store: SnapshotStore | None = None,
        head_name: str | None = None,
        *,
        teacher_options: TeacherOptions | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        check_option_keywords(options, [TeacherOptions], type(self).__name__)
        self.teacher_options = TeacherOptions.resolve(
            teacher_options, options, PLUGIN_TEACHER_OPTIONS
        )
        self.owns_store = store is None
        self.store = store if store is not None else SnapshotStore("full", head_name=head_name)
        if self.teacher_options.cache_teachers is not None:
            self.store.cache_teachers = self.teacher_options.cache_teachers
        self._pending: tuple[Tensor, Any] | None = None

    @classmethod
    def from_options(
        cls: type[_Plugin],
        distillation: DistillationOptions,
        teacher_options: TeacherOptions | None = None,
        *,
        store: SnapshotStore | None = None,
        head_name: str | None = None,
    ) -> _Plugin:
        """The plugin of its part of ``distillation`` (:meth:`option_keywords`), its
        teachers run as ``teacher_options`` says (default: the plugin's defaults)."""
        keywords = cls.option_keywords(distillation)
        return cls(**keywords, store=store, head_name=head_name, teacher_options=teacher_options)

    @classmethod
    def option_keywords(cls, distillation: DistillationOptions) -> dict[str, Any]:
        """The keywords of ``cls`` that ``distillation`` sets. Subclasses implement it."""
        raise NotImplementedError

    @property
    def teacher_bn(self) -> TeacherBatchNorm:
        """Statistics of the teachers' BatchNorm layers (``teacher_options``)."""
        return self.teacher_options.teacher_bn

    @property
    def teacher_batching(self) -> TeacherBatching:
        """How several teachers run together (``teacher_options``)."""
        return self.teacher_options.teacher_batching

    @property
    def teacher_dtype(self) -> torch.dtype | None:
        """Autocast dtype of the teacher forwards; ``None`` runs them in fp32.

        Settable (it replaces ``teacher_options``); validated by
        :func:`~avalanche_m2kd.snapshots.validate_teacher_dtype` (``torch.float32`` reads
        as ``None``; ``torch.float16`` is refused on CPU when the experience starts).
        """
        return validate_teacher_dtype(self.teacher_options.teacher_dtype)

    @teacher_dtype.setter
    def teacher_dtype(self, value: torch.dtype | None) -> None:
        self.teacher_options = dataclasses.replace(self.teacher_options, teacher_dtype=value)

    def teacher_ids(self, which: TeacherSet) -> list[int]:
        """0-based snapshot indices that teach the current experience."""
        n = len(self.store)
        if n == 0:
            return []
        return list(range(n)) if which == "all" else [n - 1]

    def run_teacher(self, k: int, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and features of teacher ``k`` on ``x``, with this plugin's options."""
        return self.store.run_teacher(k, x, self.teacher_bn, self.teacher_dtype)

    def run_teachers(self, ids: list[int], x: Tensor) -> list[tuple[Tensor, dict[str, Tensor]]]:
        """:meth:`run_teacher` of each of ``ids``, together as ``teacher_batching`` says."""
        return self.store.run_teachers(
            ids, x, self.teacher_bn, self.teacher_dtype, self.teacher_batching
        )

    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        device = getattr(strategy, "device", None)
        if device is not None:  # fail now, not at the first distilled mini-batch
            validate_teacher_dtype(self.teacher_dtype, torch.device(device).type)
        if self.owns_store:
            check_class_incremental(strategy.experience, self.store.classes)
        self.store.bind(strategy.model)
        if self.owns_store and len(self.store) == 0:
            probe = probe_input(strategy.experience, strategy.device)
            head_name = self.store.head_name
            assert head_name is not None  # bind() found it
            check_head(strategy.model, head_name, probe)

    def teacher_outputs(self, strategy: Any) -> Any:
        """What the plugin's loss needs from the teachers on ``strategy.mb_x``
        (``None``: no loss this step). Subclasses implement it."""
        raise NotImplementedError

    def before_forward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        # The teachers run before the student's forward, while the student's activation
        # graph does not exist yet: faster (docs/benchmarks/cost.md).
        self._pending = (strategy.mb_x, self.teacher_outputs(strategy))

    def pending_outputs(self, strategy: Any) -> Any:
        """The outputs ``before_forward`` computed, or computed now if it did not run
        or a later plugin replaced ``mb_x`` (the teachers must see the student's input)."""
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] is strategy.mb_x:
            return pending[1]
        return self.teacher_outputs(strategy)

    def state_dict(self) -> dict:
        """The private store's state (for :mod:`avalanche_m2kd.checkpoint`); empty
        when the store is shared (its owner saves it)."""
        return {"store": self.store.state_dict()} if self.owns_store else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        if self.owns_store:
            self.store.load_state_dict(state["store"])

    def after_training_iteration(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.store.end_step()
        if not self.store.cache_teachers:
            self.store.release_teachers()

    def after_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        if self.owns_store:
            self.store.record(strategy.model, experience_classes(strategy.experience))
