"""Tasks: one per target, each a kind that brings its head, masked loss and all-reducible metrics."""

from distmtl.tasks.base import Task, build_tasks, kind_names, register_kind, selectable_metrics

__all__ = ["Task", "build_tasks", "kind_names", "register_kind", "selectable_metrics"]
