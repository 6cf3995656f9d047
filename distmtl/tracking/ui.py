"""`distmtl ui`: the MLflow UI on the store distmtl writes to, and where in it the latest sweep is."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

#: Tag on a sweep's parent run: the sweep's storage path (see :mod:`distmtl.tune.sweep_run`).
SWEEP_PARENT_TAG = "distmtl.sweep_of"


def latest_sweep_path(tracking_uri: str) -> str | None:
    """The UI path (``#/experiments/<id>/runs/<run>``) of the most recently started sweep's parent run, or
    the latest experiment's when the store holds no sweep; None for an empty or missing store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = client.search_experiments(order_by=["last_update_time DESC"])
    if not experiments:
        return None
    ids = [e.experiment_id for e in experiments]
    sweeps = client.search_runs(ids, f"tags.`{SWEEP_PARENT_TAG}` LIKE '%'", order_by=["attributes.start_time DESC"],
                                max_results=1)
    if sweeps:
        run = sweeps[0].info
        return f"#/experiments/{run.experiment_id}/runs/{run.run_id}"
    return f"#/experiments/{experiments[0].experiment_id}"


def ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """The command that serves ``tracking_uri`` (a SQLite or file store) with MLflow's UI on host:port."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", host,
            "--port", str(port)]


def is_server(tracking_uri: str) -> bool:
    """Whether the store is an MLflow server already (it serves its own UI)."""
    return urlsplit(tracking_uri).scheme in ("http", "https")
