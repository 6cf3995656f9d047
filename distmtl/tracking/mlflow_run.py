"""The one way distmtl writes to MLflow: a thin, Ray-free wrapper over ``MlflowClient`` for one run.

``train``, ``tune`` and the recipes log their runs, epochs, artifacts and models through it. The client API
(not the fluent one) is used because the Tune driver logs many trials' runs at once and the fluent API
keeps one global active run.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from distmtl.tracking.fallback import FallbackWriter, first_line
from distmtl.tracking.lineage import code_tags, dataset_input, source_tags

_RUN_METRIC_NAMES = {"epoch", "best_epoch", "epoch_time_s"}
_BATCH = 100
#: Tag that holds why a run ended FAILED (e.g. "diverged at epoch 3, step 41: loss nan").
FAILURE_TAG = "distmtl.failure_reason"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite store ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def default_journal(name: str, tracking_uri: str) -> Path:
    """Where MLflow records for ``tracking_uri`` wait while it is away: ``mlflow-journal/<name>-<hash>.jsonl``
    in the working directory (the hash of the URI keeps records meant for another store apart)."""
    digest = hashlib.sha1(tracking_uri.encode()).hexdigest()[:8]
    return Path.cwd() / "mlflow-journal" / f"{name}-{digest}.jsonl"


def is_run_metric(key: str, value: Any) -> bool:
    """Whether a reported value is one of distmtl's metrics (not Tune's bookkeeping) and loggable."""
    return (
        ("/" in key or key in _RUN_METRIC_NAMES)
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


def flatten_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"optim.lr": "0.001", ...}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def find_runs(client: MlflowClient, experiment: str, query: str) -> list[Run]:
    """The runs of ``experiment`` that match ``query`` (none while MLflow is away: the writer said so)."""
    try:
        found = client.get_experiment_by_name(experiment)
        return client.search_runs([found.experiment_id], query) if found else []
    except Exception:
        return []


class MlflowRun:
    """One MLflow run: created (optionally nested under ``parent_run_id``; ``experiment_description``
    describes its experiment where that has none yet) with tags, the source it came from (``command``, e.g.
    ``tune``) and, given ``config``, its params, ``config.yaml`` and data set; then metrics, artifacts and its
    model; then its end. Every write goes through a :class:`FallbackWriter` (its own on ``journal`` unless one
    is shared), so a tracking server that goes away costs no record (see :mod:`distmtl.tracking.fallback`).

    As a context manager it ends the run when the block ends: FINISHED, KILLED on Ctrl-C, FAILED with the reason
    in ``distmtl.failure_reason`` on any other exception; a run ended inside the block keeps its ending. Its own
    writer then writes what it kept, or says where it is."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        *,
        command: str | None = None,
        parent_run_id: str | None = None,
        writer: FallbackWriter | None = None,
        journal: str | Path | None = None,
        experiment_description: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self.owns_writer = writer is None
        self.writer = writer or FallbackWriter(tracking_uri,
                                               journal or default_journal(experiment or "runs", tracking_uri))
        self.client = self.writer.client
        self.last_epoch = -1
        self.ended = False
        if run_id:
            self.run_id = run_id
            return
        tags = {**code_tags(), **source_tags(command), **(tags or {})}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id  # shows the run nested under its parent in the UI
        self.run_id = self.writer.create_run(experiment, run_name, tags, experiment_description)
        if config is not None:
            self.log_config(config)

    @classmethod
    def attach(cls, tracking_uri: str, run_id: str, writer: FallbackWriter | None = None,
               journal: str | Path | None = None) -> MlflowRun:
        """Log into an existing run (e.g. from another process than the one that created it); epochs it
        already holds are not logged again, whichever process logged them."""
        run = cls(tracking_uri, "", "", run_id=run_id, writer=writer, journal=journal)
        try:
            run.last_epoch = int(run.client.get_run(run_id).data.metrics.get("epoch", -1))
        except (MlflowException, OSError):  # the store is away: its journal keeps the order; nothing to skip known
            pass
        return run

    @classmethod
    def reopen(cls, tracking_uri: str, run_id: str, writer: FallbackWriter | None = None,
               journal: str | Path | None = None) -> MlflowRun:
        """Continue an existing run (a resumed trial or sweep): mark it RUNNING again; epochs it holds are not
        logged again."""
        run = cls.attach(tracking_uri, run_id, writer, journal)
        run._write("status", status="RUNNING")
        return run

    def __enter__(self) -> MlflowRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: Any) -> None:
        if not self.ended:
            if kind is None:
                self.finish("FINISHED")
            elif issubclass(kind, KeyboardInterrupt):
                self.finish("KILLED")
            else:
                self.fail(first_line(exc))
        if self.owns_writer:
            self.writer.close()

    @property
    def real_run_id(self) -> str:
        """The run's MLflow id (a run created while the store was away has a placeholder until replayed)."""
        return self.writer.resolve(self.run_id)

    def log_config(self, config: dict[str, Any]) -> None:
        """The run's settings: flattened as params, whole as ``config.yaml``, and its ``data`` section as the
        run's data set."""
        params = {k: v[:6000] for k, v in flatten_params(config).items()}
        names = list(params)
        for i in range(0, len(names), _BATCH):
            self._write("log_batch", params={k: params[k] for k in names[i : i + _BATCH]})
        self.log_dict(config, "config.yaml")
        if isinstance(config.get("data"), dict):
            self._write("log_input", dataset=dataset_input(config["data"]))

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Log every distmtl metric in ``metrics`` at ``step`` (the epoch)."""
        now = int(time.time() * 1000)
        batch = [[k, float(v), now, step] for k, v in metrics.items() if is_run_metric(k, v)]
        for i in range(0, len(batch), _BATCH):
            self._write("log_batch", metrics=batch[i : i + _BATCH])

    def log_epoch(self, metrics: dict[str, Any]) -> bool:
        """Log one epoch's report at its epoch unless this run already holds that epoch (a resumed run
        reports the epoch it resumed from again). Returns whether it was logged."""
        epoch = int(metrics["epoch"])
        if epoch <= self.last_epoch:
            return False
        self.log_metrics(metrics, step=epoch)
        self.last_epoch = epoch
        return True

    def log_checkpoint_artifacts(self, checkpoint_dir: str | Path) -> None:
        """Log the files a checkpoint carries in ``artifacts/`` (plots, JSON) under ``artifacts/``."""
        for path in sorted(Path(checkpoint_dir, "artifacts").glob("*")):
            self.log_artifact(path, "artifacts")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log the file or folder ``path`` into the run's artifacts (under ``artifact_path``)."""
        self._write("log_artifact", path=str(path), artifact_path=artifact_path)

    def log_text(self, text: str, file: str) -> None:
        """Log ``text`` as the artifact ``file`` of this run."""
        with tempfile.TemporaryDirectory(prefix="distmtl-text-") as directory:
            path = Path(directory, file)
            path.write_text(text)
            self.log_artifact(path)

    def log_dict(self, data: dict[str, Any], file: str) -> None:
        """Log ``data`` as the JSON or YAML artifact ``file`` (by its suffix) of this run."""
        self._write("log_dict", dict=data, file=file)

    def log_model(self, folder: str | Path, name: str) -> None:
        """Log the MLflow model saved in ``folder`` as this run's logged model ``name``, linked to the metrics of
        the run's last epoch (see :mod:`distmtl.tracking.logged_model`)."""
        self._write("log_model", path=str(folder), name=name)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._write("log_batch", tags={k: str(v) for k, v in tags.items()})

    def fail(self, reason: str) -> None:
        """End the run FAILED, with ``reason`` in the tag ``distmtl.failure_reason``."""
        self.set_tags({FAILURE_TAG: reason})
        self.finish("FAILED")

    def finish(self, status: str = "FINISHED") -> None:
        """End the run as FINISHED, FAILED or KILLED."""
        self._write("status", status=status, time=int(time.time() * 1000))
        self.ended = True

    def _write(self, op: str, **fields: Any) -> None:
        self.writer.write({"op": op, "run": self.run_id, **fields})
