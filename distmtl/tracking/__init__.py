"""Tracking: one MLflow run per training run or Tune trial (params, per-epoch metrics, config artifact)."""

from distmtl.tracking.mlflow_run import (
    FAILURE_TAG,
    MlflowRun,
    default_journal,
    default_tracking_uri,
    flatten_params,
    is_run_metric,
)

__all__ = ["FAILURE_TAG", "MlflowRun", "default_journal", "default_tracking_uri", "flatten_params", "is_run_metric"]
