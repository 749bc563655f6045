"""Shared plumbing of the distillation plugins: where their teachers come from."""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
from avalanche.training.plugins import SupervisedPlugin
from torch import Tensor

from avalanche_m2kd.batched_teachers import TeacherBatching, check_teacher_batching
from avalanche_m2kd.snapshots import (
    SnapshotStore,
    TeacherBatchNorm,
    validate_teacher_dtype,
)
from avalanche_m2kd.features import check_head
from avalanche_m2kd.options import check_choice
from avalanche_m2kd.stream import check_class_incremental, experience_classes, probe_input

TeacherSet = Literal["all", "last"]


class TeacherPlugin(SupervisedPlugin, supports_distributed=True):
    """Base of the distillation plugins: gives them a :class:`SnapshotStore`.

    With ``store=None`` the plugin works on its own: it keeps a private ``"full"``
    store, checks that the stream is class-incremental and records a snapshot after
    each experience. With a shared store (e.g. ``SnapshotMaskingPlugin(...).store``),
    the plugin only reads it: whoever owns the store records the snapshots.

    ``teacher_bn`` says which statistics the teachers' BatchNorm layers use on the
    distilled mini-batch (see :meth:`avalanche_m2kd.snapshots.FrozenTeacher.run`);
    ``teacher_dtype`` the autocast dtype of their forwards (:attr:`teacher_dtype`).
    ``cache_teachers`` (``None``: leave the store's setting) sets the store's
    :attr:`~avalanche_m2kd.snapshots.SnapshotStore.cache_teachers`; when it is off,
    the plugin frees the teacher the store holds after every training iteration.
    ``teacher_batching`` how several teachers run on one mini-batch (``"loop"``,
    ``"vmap"`` or ``"streams"``: :mod:`avalanche_m2kd.batched_teachers`).
    """

    def __init__(
        self,
        store: Optional[SnapshotStore] = None,
        head_name: Optional[str] = None,
        teacher_bn: TeacherBatchNorm = "batch",
        teacher_dtype: Optional[torch.dtype] = None,
        cache_teachers: Optional[bool] = None,
        teacher_batching: TeacherBatching = "loop",
    ):
        super().__init__()
        check_choice(teacher_bn, TeacherBatchNorm, "teacher_bn")
        self.teacher_batching: TeacherBatching = check_teacher_batching(teacher_batching, cache_teachers)
        self.teacher_bn: TeacherBatchNorm = teacher_bn
        self.teacher_dtype = teacher_dtype
        self.owns_store = store is None
        self.store = store if store is not None else SnapshotStore("full", head_name=head_name)
        if cache_teachers is not None:
            self.store.cache_teachers = cache_teachers
        self._pending: Optional[tuple[Tensor, Any]] = None

    @property
    def teacher_dtype(self) -> Optional[torch.dtype]:
        """Autocast dtype of the teacher forwards; ``None`` runs them in fp32.

        Settable; validated by :func:`~avalanche_m2kd.snapshots.validate_teacher_dtype`
        (``torch.float32`` is stored as ``None``; ``torch.float16`` is refused on CPU
        when the experience starts).
        """
        return self._teacher_dtype

    @teacher_dtype.setter
    def teacher_dtype(self, value: Optional[torch.dtype]) -> None:
        self._teacher_dtype = validate_teacher_dtype(value)

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
        return self.store.run_teachers(ids, x, self.teacher_bn, self.teacher_dtype, self.teacher_batching)

    def before_training_exp(self, strategy, *args, **kwargs):
        device = getattr(strategy, "device", None)
        if device is not None:  # fail now, not at the first distilled mini-batch
            validate_teacher_dtype(self.teacher_dtype, torch.device(device).type)
        if self.owns_store:
            check_class_incremental(strategy.experience, self.store.classes)
        self.store.bind(strategy.model)
        if self.owns_store and len(self.store) == 0:
            probe = probe_input(strategy.experience, strategy.device)
            check_head(strategy.model, self.store.head_name, probe)  # type: ignore[arg-type]

    def teacher_outputs(self, strategy) -> Any:
        """What the plugin's loss needs from the teachers on ``strategy.mb_x``
        (``None``: no loss this step). Subclasses implement it."""
        raise NotImplementedError

    def before_forward(self, strategy, *args, **kwargs):
        # The teachers run before the student's forward: on our CPU, 9 teacher forwards
        # run after it (its activation graph alive) cost up to 1.2x more, and the step
        # 1.25x student + 9 isolated forwards; run before, 0.90-0.99x (README, "Cost").
        self._pending = (strategy.mb_x, self.teacher_outputs(strategy))

    def pending_outputs(self, strategy) -> Any:
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

    def after_training_iteration(self, strategy, *args, **kwargs):
        self.store.end_step()
        if not self.store.cache_teachers:
            self.store.release_teachers()

    def after_training_exp(self, strategy, *args, **kwargs):
        if self.owns_store:
            self.store.record(strategy.model, experience_classes(strategy.experience))
