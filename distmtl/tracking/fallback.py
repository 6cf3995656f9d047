"""MLflow writes that survive the tracking server going away.

Every write is one JSON-able operation. While the server answers, it is applied at once. When a
write fails, the writer says so once, keeps that and every later operation in a local journal
(JSON lines) and goes on; every ``retry_s`` it tries the server again and, when it answers,
applies the journal in order. What is still in the journal at the end is replayed with
``distmtl mlflow replay FILE``. Training never waits more than one bounded attempt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from distmtl.tracking.logged_model import log_model_folder
from distmtl.tracking.probe import health_status

log = logging.getLogger("distmtl")

#: How MLflow's HTTP client retries (its defaults retry for about four minutes per request).
BOUNDED_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
_OFFLINE_PREFIX = "offline-"
EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
#: The experiment tag MLflow's UI shows as the experiment's description.
DESCRIPTION_TAG = "mlflow.note.content"
_HEADER = "distmtl_mlflow_journal"
#: Errors by which a store that answered refuses a record; sending it again would not help.
_REFUSALS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST",
             "INVALID_STATE", "PERMISSION_DENIED"}


def refused(exc: Exception) -> bool:
    """Whether the store answered and refused (rather than failed to answer)."""
    return isinstance(exc, MlflowException) and exc.error_code in _REFUSALS


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def ensure_experiment(client: MlflowClient, name: str, description: str | None = None) -> str:
    """The id of experiment ``name``, created if missing, tagged as model training: MLflow 3's UI opens an
    experiment without a kind on its GenAI overview (traces, tokens) instead of the runs table. ``description``
    becomes the experiment's description where it has none (one the user wrote is kept)."""
    found = client.get_experiment_by_name(name)
    wanted = {EXPERIMENT_KIND_TAG: TRAINING_KIND, **({DESCRIPTION_TAG: description} if description else {})}
    if found is None:
        return client.create_experiment(name, tags=wanted)
    for key, value in wanted.items():  # an experiment created by hand or by an older distmtl
        if not found.tags.get(key):
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def apply_operation(client: MlflowClient, op: dict[str, Any], ids: dict[str, str]) -> None:
    """Apply one operation; runs created offline are named by a placeholder that ``ids`` maps to the real id."""
    run = ids.get(op.get("run", ""), op.get("run"))
    kind = op["op"]
    if kind == "create_run":
        experiment_id = ensure_experiment(client, op["experiment"], op.get("description"))
        ids[op["run"]] = client.create_run(experiment_id, run_name=op["run_name"], tags=op["tags"]).info.run_id
    elif kind == "log_batch":
        client.log_batch(run, metrics=[Metric(*m) for m in op.get("metrics", [])],
                         params=[Param(k, v) for k, v in op.get("params", {}).items()],
                         tags=[RunTag(k, v) for k, v in op.get("tags", {}).items()])
    elif kind == "log_dict":
        client.log_dict(run, op["dict"], op["file"])
    elif kind == "log_artifact":
        client.log_artifact(run, op["path"], op["artifact_path"])
    elif kind == "log_model":
        log_model_folder(client, run, op["path"], op["name"])
    elif kind == "log_input":
        client.log_inputs(run, [DatasetInput(Dataset(**op["dataset"]), [InputTag("mlflow.data.context", "training")])])
    elif kind == "status":
        if op["status"] == "RUNNING":
            client.update_run(run, status="RUNNING")
        else:
            client.set_terminated(run, status=op["status"], end_time=op.get("time"))
    else:
        raise ValueError(f"unknown MLflow journal operation {kind!r}")


def reachable(tracking_uri: str, timeout: float = 2.0) -> bool:
    """Whether an HTTP tracking server answers its health check at all (other stores: assume so and try)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    return isinstance(health_status(tracking_uri, timeout), int)  # any answer, e.g. 401 from an authenticating proxy


class FallbackWriter:
    """Applies MLflow operations for one process; keeps them in ``journal`` while the store fails."""

    def __init__(self, tracking_uri: str, journal: str | Path, retry_s: float = 30.0) -> None:
        for key, value in BOUNDED_RETRIES.items():
            os.environ.setdefault(key, value)
        self.tracking_uri = tracking_uri
        self.journal = Path(journal)
        self.retry_s = retry_s
        self.client = MlflowClient(tracking_uri)
        self.ids: dict[str, str] = {}
        self.offline = False
        self._last_try = 0.0

    def resolve(self, run_id: str) -> str:
        """The real id of a run (a run created while offline has a placeholder until it is replayed)."""
        return self.ids.get(run_id, run_id)

    def create_run(self, experiment: str, run_name: str, tags: dict[str, str], description: str | None = None) -> str:
        """Create a run and return its id, or a placeholder id while the store is away; ``description``: the
        experiment's, if it is created or has none."""
        op = {"op": "create_run", "run": f"{_OFFLINE_PREFIX}{uuid.uuid4().hex}", "experiment": experiment,
              "run_name": run_name, "tags": tags, **({"description": description} if description else {})}
        self.write(op)
        return self.resolve(op["run"])

    def write(self, op: dict[str, Any]) -> None:
        """Apply ``op`` now, or keep it in the journal after every earlier kept one (also another process's:
        the journal is written in order)."""
        if (self.offline or self.journal.exists()) and not self._recover():
            self._keep(op)
            return
        try:
            apply_operation(self.client, op, self.ids)
        except Exception as exc:  # any failure of the store: keep the record rather than lose it
            if refused(exc):
                log.warning("MLflow at %s refused a record (%s): %s", self.tracking_uri, op["op"], first_line(exc))
                return
            self._go_offline(exc)
            self._keep(op)

    def close(self) -> bool:
        """Write what the journal holds (this process's and any other's); say how to replay what is left.
        Returns whether nothing is left."""
        if not self.journal.exists():
            return True
        self._last_try = 0.0
        if self._recover():
            return True
        log.error("MLflow at %s is still unreachable: its records are kept in %s; write them with: "
                  "distmtl mlflow replay %s", self.tracking_uri, self.journal, self.journal)
        return False

    def _go_offline(self, exc: Exception) -> None:
        if not self.offline:
            log.warning("MLflow at %s failed (%s); training goes on, and its records are kept in %s and written "
                        "when MLflow answers again", self.tracking_uri, first_line(exc), self.journal)
        self.offline = True
        self._last_try = time.monotonic()

    def _recover(self) -> bool:
        """Try the store again (at most every ``retry_s``); on success apply the journal and go online."""
        if time.monotonic() - self._last_try < self.retry_s:
            return False
        self._last_try = time.monotonic()
        if not reachable(self.tracking_uri):
            return False
        done, left = replay(self.journal, self.client, self.ids)
        if left:
            if not self.offline:
                self._go_offline(RuntimeError(f"{left} kept record(s) could not be written"))
            return False
        if self.offline or done:
            log.warning("MLflow at %s answers again: wrote %d kept record(s)", self.tracking_uri, done)
        self.offline = False
        return True

    def _keep(self, op: dict[str, Any]) -> None:
        """Append ``op`` to the journal; an artifact or model folder is copied beside it (its source may be
        temporary)."""
        if not self.journal.exists():
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            _append(self.journal, {_HEADER: 1, "tracking_uri": self.tracking_uri})
        if "path" in op:
            copy = self.journal.with_name(self.journal.name + ".files") / uuid.uuid4().hex[:12] / Path(op["path"]).name
            copy.parent.mkdir(parents=True)
            (shutil.copytree if Path(op["path"]).is_dir() else shutil.copy2)(op["path"], copy)
            op = {**op, "path": str(copy)}
        _append(self.journal, op)


def journal_uri(journal: str | Path) -> str:
    """The tracking URI a journal was written for."""
    with open(journal) as f:
        return json.loads(f.readline())["tracking_uri"]


def replay(journal: str | Path, client: MlflowClient, ids: dict[str, str] | None = None) -> tuple[int, int]:
    """Apply a journal's operations in order; return (applied, left). A record the store refuses is reported
    and dropped. When nothing is left the journal and its copied files are removed; else it is rewritten
    with what is left (placeholders already created are kept as ``alias`` lines), so running it again
    never applies anything twice."""
    journal = Path(journal)
    if not journal.exists():
        return 0, 0
    ids = {} if ids is None else ids
    lines = journal.read_text().splitlines()
    header, ops = json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line.strip()]
    applied = 0
    for i, op in enumerate(ops):
        if op["op"] == "alias":
            ids[op["run"]] = op["run_id"]
            continue
        try:
            apply_operation(client, op, ids)
        except Exception as exc:
            if refused(exc):
                log.warning("MLflow refused a kept record (%s): %s; dropped", op["op"], first_line(exc))
                continue
            # the store failed again: keep the rest, in order
            aliases = [{"op": "alias", "run": k, "run_id": v} for k, v in ids.items() if k.startswith(_OFFLINE_PREFIX)]
            _rewrite(journal, [header, *aliases, *ops[i:]])
            return applied, len(ops) - i
        applied += 1
    journal.unlink()
    shutil.rmtree(journal.with_name(journal.name + ".files"), ignore_errors=True)
    return applied, 0


def _append(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _rewrite(path: Path, records: list[dict[str, Any]]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(r) + "\n" for r in records))
    partial.replace(path)
