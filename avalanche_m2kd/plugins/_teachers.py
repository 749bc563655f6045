"""Shared plumbing of the distillation plugins: where their teachers come from."""

from __future__ import annotations

from typing import Literal, Optional

from avalanche.training.plugins import SupervisedPlugin

from avalanche_m2kd.snapshots import SnapshotStore, TeacherBatchNorm
from avalanche_m2kd.stream import check_class_incremental, experience_classes

TeacherSet = Literal["all", "last"]


class TeacherPlugin(SupervisedPlugin, supports_distributed=True):
    """Base of the distillation plugins: gives them a :class:`SnapshotStore`.

    With ``store=None`` the plugin works on its own: it keeps a private ``"full"``
    store, checks that the stream is class-incremental and records a snapshot after
    each experience. With a shared store (e.g. ``SnapshotMaskingPlugin(...).store``),
    the plugin only reads it: whoever owns the store records the snapshots.

    ``teacher_bn`` says which statistics the teachers' BatchNorm layers use on the
    distilled mini-batch (see :meth:`avalanche_m2kd.snapshots.FrozenTeacher.run`).
    """

    def __init__(
        self,
        store: Optional[SnapshotStore] = None,
        head_name: Optional[str] = None,
        teacher_bn: TeacherBatchNorm = "batch",
    ):
        super().__init__()
        if teacher_bn not in ("batch", "running"):
            raise ValueError(
                f"Expected argument `teacher_bn` to be 'batch' or 'running', but got {teacher_bn!r}"
            )
        self.teacher_bn: TeacherBatchNorm = teacher_bn
        self.owns_store = store is None
        self.store = store if store is not None else SnapshotStore("full", head_name=head_name)

    @staticmethod
    def _check_teachers(value: str, name: str) -> None:
        if value not in ("all", "last"):
            raise ValueError(f"Expected argument `{name}` to be 'all' or 'last', but got {value!r}")

    def teacher_ids(self, which: TeacherSet) -> list[int]:
        """0-based snapshot indices that teach the current experience."""
        n = len(self.store)
        if n == 0:
            return []
        return list(range(n)) if which == "all" else [n - 1]

    def before_training_exp(self, strategy, *args, **kwargs):
        if self.owns_store:
            check_class_incremental(strategy.experience, self.store.classes)
        self.store.bind(strategy.model)

    def after_training_exp(self, strategy, *args, **kwargs):
        if self.owns_store:
            self.store.record(strategy.model, experience_classes(strategy.experience))
