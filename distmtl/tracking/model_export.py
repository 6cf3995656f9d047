"""The best-epoch model as an MLflow PyTorch model: saved from a run's last checkpoint, logged as the run's
MLflow logged model ``model`` (``runs:/<run id>/model``, ``models:/<model id>``), registered by
``distmtl tune --register`` and loaded back by ``distmtl evaluate`` or ``mlflow.pytorch.load_model``.

The folder holds MLflow's model files (``MLmodel``, the weights, an input example, a signature naming
each task's output) and ``config.yaml``, the run's resolved config, which rebuilds the data it was
trained on. The model is stored with Python's pickle (MLflow's safer ``pt2`` graph format cannot hold
every architecture's control flow): load only models you trust.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

import distmtl
from distmtl.errors import DistmtlError

#: The name of a run's logged model: ``runs:/<run id>/model`` finds it.
MODEL_NAME = "model"
CONFIG_FILE = "config.yaml"
#: Where runs of distmtl before logged models kept the model: in the run's artifacts.
_ARTIFACT_URI = re.compile(r"^runs:/(?P<run>[^/]+)/artifacts/model/?$")


def save_model(model: nn.Module, image_shape: tuple[int, ...], config: dict[str, Any], path: Path) -> None:
    """Save ``model`` (on the CPU, in eval mode) as an MLflow PyTorch model at ``path`` with its config."""
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    model = model.cpu().eval()
    example = torch.zeros(1, *image_shape)
    with torch.no_grad():
        outputs = model(example)
    signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, *image_shape), "image")]),
        Schema([TensorSpec(np.dtype(np.float32), (-1, *out.shape[1:]), task) for task, out in outputs.items()]),
    )
    quiet = logging.getLogger("mlflow.pytorch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the pickle caution is in this module's docstring and the README
    try:
        mlflow.pytorch.save_model(model, str(path), signature=signature, input_example=example.numpy(),
                                  pip_requirements=[f"distmtl=={distmtl.__version__}"], serialization_format="pickle")
    finally:
        quiet.setLevel(level)
    (path / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))


def load_model(uri: str) -> nn.Module:
    """A model saved by :func:`save_model`, from a local folder or an MLflow URI, on the CPU in eval mode."""
    import mlflow.pytorch

    return mlflow.pytorch.load_model(uri, map_location="cpu").eval()


def download_model(uri: str, destination: str, tracking_uri: str) -> Path:
    """The model folder at ``uri`` (``models:/<model id>``, ``models:/<name>/<version>``, ``runs:/<run id>/model``
    or a local folder) downloaded into ``destination``. ``runs:/<run id>/artifacts/model``, where distmtl
    before logged models kept a run's model, finds the run's logged model too."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        located = _model_location(uri, tracking_uri)
        return Path(mlflow.artifacts.download_artifacts(located, dst_path=destination, tracking_uri=tracking_uri))
    except MlflowException:
        found = _ARTIFACT_URI.match(uri)
        if found is None:
            raise
    return download_model(f"runs:/{found['run']}/{MODEL_NAME}", destination, tracking_uri)


def _model_location(uri: str, tracking_uri: str) -> str:
    """A ``models:/`` URI as the artifact location it names in the store at ``tracking_uri`` (MLflow resolves
    ``models:/`` against the process-wide tracking URI, which may be another store); other URIs as they are."""
    if not uri.startswith("models:/"):
        return uri
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    reference = uri.removeprefix("models:/").strip("/")
    if "/" in reference:
        name, version = reference.split("/", 1)
        return client.get_model_version_download_uri(name, version)
    if "@" in reference:
        name, alias = reference.split("@", 1)
        return client.get_model_version_download_uri(name, client.get_model_version_by_alias(name, alias).version)
    return client.get_logged_model(reference).artifact_location


def register_trial_model(tracking_uri: str, experiment: str, trial_id: str, name: str) -> tuple[str, str]:
    """Register the logged model of the sweep trial ``trial_id`` (its MLflow run in ``experiment``) as ``name``;
    returns the model's URI (``models:/<model id>``) and the new version."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"tags.`distmtl.trial_id` = '{trial_id}'") if found else []
    if not runs:
        raise DistmtlError(f"--register: no MLflow run of trial {trial_id} in experiment '{experiment}' at "
                           f"{tracking_uri}")
    outputs = runs[0].outputs.model_outputs if runs[0].outputs else []
    if not outputs:
        raise DistmtlError(f"--register: the MLflow run of trial {trial_id} ({runs[0].info.run_id}) has no logged "
                           "model (its trial saved no best epoch)")
    model_id = max(outputs, key=lambda o: o.step).model_id
    model_uri = f"models:/{model_id}"
    # Through this store's client, with the model's artifact location as the source: MLflow resolves a models:/
    # source (and mlflow.register_model its URI) in the process-wide tracking store, which may be another one.
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    location = client.get_logged_model(model_id).artifact_location
    version = client.create_model_version(name, location, run_id=runs[0].info.run_id, model_id=model_id)
    return model_uri, str(version.version)
