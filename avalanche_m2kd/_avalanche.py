"""Every use of Avalanche 0.6.0's private names, in one place.

The rest of the package reaches Avalanche's internals only through this module, and
``tests/test_avalanche_compat.py`` pins each name listed here, so an Avalanche release
that renames or changes one breaks that test file, loudly, rather than a run.

Two kinds of use:

* private names *read* (a class, an attribute, a function), exposed here under a
  public name: :data:`ParametricSingleBuffer`, :func:`criterion`,
  :data:`EVALUATOR_STATE`, :func:`fmnist_default_transforms`, :data:`PLUGIN_FIELDS`;
* private hooks our subclasses *override or call*, listed in
  :data:`OVERRIDDEN_HOOKS` (an override cannot live elsewhere than its class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from avalanche.logging import WandBLogger
from avalanche.training.plugins import EarlyStoppingPlugin, LRSchedulerPlugin
from avalanche.training.storage_policy import ParametricBuffer
from avalanche.training.storage_policy import _ParametricSingleBuffer as ParametricSingleBuffer
from avalanche.training.templates import SupervisedTemplate
from torch import nn

__all__ = [
    "EVALUATOR_STATE",
    "MEAN_FIELDS",
    "OVERRIDDEN_HOOKS",
    "PLUGIN_FIELDS",
    "ParametricSingleBuffer",
    "PluginFields",
    "criterion",
    "fmnist_default_transforms",
]

#: ``(class, method)``: private methods of Avalanche classes that our subclasses
#: override (``ClassBalancedBuffer``, ``TrainingMixin``) or call (``WandBLogger``).
OVERRIDDEN_HOOKS: tuple[tuple[type, str], ...] = (
    (ParametricBuffer, "_split_by_class"),
    (SupervisedTemplate, "_before_training_exp"),
    (SupervisedTemplate, "_after_training_exp"),
    (WandBLogger, "_log_checkpoint"),
)

#: Attributes of ``EvaluationPlugin`` that hold its metrics and their history (the
#: last one private), saved in checkpoints.
EVALUATOR_STATE = ("metrics", "all_metric_results", "last_metric_results", "_metric_values")


def criterion(strategy: Any) -> nn.Module | None:
    """The loss module a strategy trains with (``SupervisedTemplate._criterion``)."""
    return getattr(strategy, "_criterion", None)


def fmnist_default_transforms() -> tuple[Any, Any]:
    """``SplitFMNIST``'s default (train, eval) transforms."""
    from avalanche.benchmarks.classic import cfashion_mnist

    return (
        cfashion_mnist._default_fmnist_train_transform,
        cfashion_mnist._default_fmnist_eval_transform,
    )


@dataclass(frozen=True)
class PluginFields:
    """What a checkpoint does with each attribute of one Avalanche plugin class.

    Attributes:
        saved: state carried from one experience to the next: saved and restored
            (objects with a ``state_dict`` through it, ``Mean`` by its fields).
        compared: construction options that change training: saved, and a resumed
            plugin must have the same.
        unsaved: neither: reset by the plugin at every experience's start, or
            without effect on training.
    """

    saved: tuple[str, ...]
    compared: tuple[str, ...]
    unsaved: tuple[str, ...] = ()


#: Every attribute of the stateful Avalanche plugins that checkpoints handle.
PLUGIN_FIELDS: dict[type, PluginFields] = {
    # Its scheduler steps per epoch/iteration and is never reset with
    # reset_scheduler=False; the flags and running loss serve metric-based
    # schedulers (ReduceLROnPlateau) across hooks.
    LRSchedulerPlugin: PluginFields(
        saved=(
            "scheduler",
            "rolling_metric",
            "_was_training",
            "_just_validated",
            "_executed_train_iteration",
        ),
        compared=(
            "reset_scheduler",
            "reset_lr",
            "metric",
            "step_granularity",
            "first_epoch_only",
            "first_exp_only",
        ),
    ),
    # best_state / best_val / best_step are reset in before_training_exp: nothing
    # crosses an experience boundary, where checkpoints are taken.
    EarlyStoppingPlugin: PluginFields(
        saved=(),
        compared=(
            "val_stream_name",
            "metric_name",
            "metric_key",
            "patience",
            "peval_mode",
            "margin",
            "operator",
        ),
        unsaved=("best_state", "best_val", "best_step", "verbose"),
    ),
}

#: Fields of ``avalanche.evaluation.metrics.Mean`` (``LRSchedulerPlugin.rolling_metric``).
MEAN_FIELDS = ("summed", "weight")
