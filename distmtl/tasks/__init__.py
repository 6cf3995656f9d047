"""Tasks: one per target, each a kind that brings its head, masked loss and all-reducible metrics.

Importing the package registers every built-in kind.
"""

from distmtl.tasks import binary, classification, dense, detection, ranking, regression  # noqa: F401  (register)
from distmtl.tasks.base import TASK_KINDS, Task, build_tasks, register_kind, selectable_metrics

__all__ = ["TASK_KINDS", "Task", "build_tasks", "register_kind", "selectable_metrics"]
