"""Multi-level distillation: intermediate features pulled towards the snapshots'."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from avalanche_m2kd.features import INPUT_SUFFIX, FeatureCapture, find_head, resolve_layer_specs
from avalanche_m2kd.losses import FeatureLoss, multi_level_distillation_loss
from avalanche_m2kd.option_types import (
    PLUGIN_TEACHER_OPTIONS,
    DistillationOptions,
    TeacherOptions,
    TeacherSet,
    option_keywords,
)
from avalanche_m2kd.options import check_choice, check_number
from avalanche_m2kd.plugins.teachers import TeacherPlugin
from avalanche_m2kd.snapshots import SnapshotStore

__all__ = ["MultiLevelDistillationPlugin"]

#: The defaults of the distillation options this plugin takes under its own names.
_DEFAULT = DistillationOptions()


# Avalanche types no `__init_subclass__` keyword: mypy does not know `supports_distributed`.
class MultiLevelDistillationPlugin(TeacherPlugin, supports_distributed=True):  # type: ignore[call-arg]
    r"""Adds ``weight * L_feat`` to the loss: feature distillation at named layers.

    .. math::
        L_{feat} = \sum_j w_j \frac{1}{|L|}\sum_{l\in L} d\big(F_l(x), F^{(j)}_l(x)\big)

    over the teachers ``j`` (the last snapshot, or all with uniform ``w_j``) and
    layers ``L``, with ``d`` from :func:`avalanche_m2kd.losses.feature_distillation_loss`.
    Unlike Avalanche's ``FeatureDistillationPlugin`` (one layer, last model only),
    it distils several levels and can use every snapshot.

    Args:
        feature_layers: dotted module names whose outputs are distilled (append
            ``":input"`` for a module's input). ``None`` (default, ours) uses the
            input of the classifier head — the penultimate features, which every
            classification model has. For ResNets the residual stages (e.g.
            ``["layer2", "layer3"]``) are the natural choice. Unknown names fail
            before training and the error lists the valid ones.
        loss: ``"normalized_mse"`` (default, ours), ``"mse"`` or ``"attention"``
            (:func:`~avalanche_m2kd.losses.feature_distillation_loss`).
        teachers: the ``"last"`` snapshot (default, ours) or ``"all"`` (averaged).
        weight: ``lambda_feat`` >= 0 (default 0.1, ours).
        store: a shared :class:`SnapshotStore`; ``None`` keeps a private full-copy one.
        head_name: the classifier head (found if ``None``).
        teacher_options, **options: how the teachers run, as one
            :class:`~avalanche_m2kd.option_types.TeacherOptions` or as its fields
            (keyword only), as in :class:`~avalanche_m2kd.plugins.TeacherPlugin`
            (features are captured batched too); give both plugins the same object, so
            that a teacher they share runs once per mini-batch.
    """

    @option_keywords(PLUGIN_TEACHER_OPTIONS)
    def __init__(
        self,
        feature_layers: Sequence[str] | None = _DEFAULT.feature_layers,
        loss: FeatureLoss = _DEFAULT.feature_loss,
        teachers: TeacherSet = _DEFAULT.feature_teachers,
        weight: float = _DEFAULT.feat_weight,
        store: SnapshotStore | None = None,
        head_name: str | None = None,
        *,
        teacher_options: TeacherOptions | None = None,
        **options: Any,
    ) -> None:
        super().__init__(store, head_name, teacher_options=teacher_options, **options)
        self.loss = check_choice(loss, FeatureLoss, "loss")
        self.weight = check_number(weight, "weight")
        if feature_layers is not None and isinstance(feature_layers, str):
            feature_layers = [feature_layers]
        self.teachers: TeacherSet = check_choice(teachers, TeacherSet, "teachers")
        self.feature_layers = None if feature_layers is None else list(feature_layers)
        self.head_name = head_name
        self._student: FeatureCapture | None = None

    @classmethod
    def option_keywords(cls, distillation: DistillationOptions) -> dict[str, Any]:
        """This plugin's keywords in ``distillation``: its ``feature_layers``,
        ``feature_loss`` (``loss``), ``feature_teachers`` (``teachers``) and ``feat_weight``
        (``weight``)."""
        d = distillation
        return {"feature_layers": d.feature_layers, "loss": d.feature_loss,
                "teachers": d.feature_teachers, "weight": d.feat_weight}

    def layer_specs(self, model: Any) -> list[str]:
        """The validated layer specs for ``model``."""
        if self.feature_layers is not None:
            return resolve_layer_specs(model, self.feature_layers)
        return [find_head(model, self.store.head_name or self.head_name) + INPUT_SUFFIX]

    def before_training(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.layer_specs(strategy.model)  # fail before any training on a bad name

    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        super().before_training_exp(strategy, *args, **kwargs)
        specs = self.layer_specs(strategy.model)
        self._detach()
        self._student = FeatureCapture(strategy.model, specs).attach()
        self.store.capture_features(specs)

    def teacher_outputs(self, strategy: Any) -> list[list[Tensor]] | None:
        """Each teacher's features at the student's layer specs, on the mini-batch."""
        ids = self.teacher_ids(self.teachers)
        if not ids or self.weight == 0 or self._student is None:
            return None
        outputs = self.run_teachers(ids, strategy.mb_x)
        return [[feats[s] for s in self._student.specs] for _, feats in outputs]

    def before_backward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        teachers = self.pending_outputs(strategy)
        if teachers is None:
            return
        assert self._student is not None  # teacher_outputs gave features: the capture is on
        student = self._student.collect()
        strategy.loss += self.weight * multi_level_distillation_loss(student, teachers, self.loss)

    def after_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self._detach()
        super().after_training_exp(strategy, *args, **kwargs)

    def _detach(self) -> None:
        if self._student is not None:
            self._student.detach()
            self._student = None
