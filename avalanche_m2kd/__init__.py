"""avalanche-m2kd: M2KD multi-model and multi-level distillation for Avalanche."""

from avalanche_m2kd.criterion import LogitAdjustedCrossEntropy
from avalanche_m2kd.loggers import WandBLogger
from avalanche_m2kd.plugins import (
    MultiLevelDistillationPlugin,
    MultiModelDistillationPlugin,
    SeenClassesMaskingPlugin,
    SnapshotMaskingPlugin,
)
from avalanche_m2kd.snapshots import FrozenTeacher, SnapshotStore
from avalanche_m2kd.strategy import M2KDStrategy

__version__ = "0.1.0"

__all__ = [
    "FrozenTeacher",
    "LogitAdjustedCrossEntropy",
    "M2KDStrategy",
    "MultiLevelDistillationPlugin",
    "MultiModelDistillationPlugin",
    "SeenClassesMaskingPlugin",
    "SnapshotMaskingPlugin",
    "SnapshotStore",
    "WandBLogger",
    "__version__",
]
