"""Tracking: one MLflow run per training run or Tune trial (params, per-epoch metrics, config artifact).

The names below load :mod:`distmtl.tracking.mlflow_run` (and so MLflow) on first use: a training worker that
only writes its figures and model files (``plots``, ``model_export``) starts without importing MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FAILURE_TAG", "MlflowRun", "default_journal", "default_tracking_uri", "flatten_params", "is_run_metric"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("distmtl.tracking.mlflow_run"), name)
    raise AttributeError(f"module 'distmtl.tracking' has no attribute '{name}'")
