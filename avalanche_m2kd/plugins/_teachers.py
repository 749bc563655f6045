"""Former home of :mod:`avalanche_m2kd.plugins.teachers`, kept so that older imports work."""

from avalanche_m2kd.plugins.teachers import TeacherPlugin, TeacherSet  # noqa: F401
