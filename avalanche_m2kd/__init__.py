"""avalanche-m2kd: M2KD multi-model and multi-level distillation for Avalanche."""

import warnings

# Avalanche's plugins import qpsolvers (for GEM), which warns at import time when no QP
# solver is installed. M2KD never solves a QP: import them first with exactly that
# warning silenced; every other filter is back as it was before our own imports run.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)
    import avalanche.training.plugins  # noqa: F401

from avalanche_m2kd.criterion import LogitAdjustedCrossEntropy
from avalanche_m2kd.loggers import WandBLogger
from avalanche_m2kd.option_types import DistillationOptions, SnapshotOptions, TeacherOptions
from avalanche_m2kd.plugins import (
    MultiLevelDistillationPlugin,
    MultiModelDistillationPlugin,
    SeenClassesMaskingPlugin,
    SnapshotMaskingPlugin,
    TeacherPlugin,
)
from avalanche_m2kd.pruning import FaithfulKeep
from avalanche_m2kd.snapshots import FrozenTeacher, SnapshotStore
from avalanche_m2kd.strategy import M2KDStrategy
from avalanche_m2kd.training import TrainingMixin

__version__ = "0.1.0"

__all__ = [
    "DistillationOptions",
    "FaithfulKeep",
    "FrozenTeacher",
    "LogitAdjustedCrossEntropy",
    "M2KDStrategy",
    "MultiLevelDistillationPlugin",
    "MultiModelDistillationPlugin",
    "SeenClassesMaskingPlugin",
    "SnapshotMaskingPlugin",
    "SnapshotOptions",
    "SnapshotStore",
    "TeacherOptions",
    "TeacherPlugin",
    "TrainingMixin",
    "WandBLogger",
    "__version__",
]
