"""One thin Avalanche plugin per M2KD idea; each also works on its own."""

from avalanche_m2kd.plugins.class_masking import SeenClassesMaskingPlugin
from avalanche_m2kd.plugins.multi_level import MultiLevelDistillationPlugin
from avalanche_m2kd.plugins.multi_model import MultiModelDistillationPlugin
from avalanche_m2kd.plugins.nested_training import NestedTrainingPlugin
from avalanche_m2kd.plugins.snapshot_masking import SnapshotMaskingPlugin
from avalanche_m2kd.plugins.teachers import TeacherPlugin, TeacherSet

__all__ = [
    "MultiLevelDistillationPlugin",
    "MultiModelDistillationPlugin",
    "NestedTrainingPlugin",
    "SeenClassesMaskingPlugin",
    "SnapshotMaskingPlugin",
    "TeacherPlugin",
    "TeacherSet",
]
