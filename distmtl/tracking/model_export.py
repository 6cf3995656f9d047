"""The best-epoch model as an MLflow PyTorch model: saved beside the last checkpoint's records, logged with
them (``artifacts/model`` of the run), loaded back by ``distmtl evaluate`` or ``mlflow.pytorch.load_model``.

The directory holds MLflow's model files (``MLmodel``, the weights, an input example, a signature naming
each task's output) and ``config.yaml``, the run's resolved config, which rebuilds the data it was
trained on. The model is stored with Python's pickle (MLflow's safer ``pt2`` graph format cannot hold
every architecture's control flow): load only models you trust.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

import distmtl
from distmtl.errors import DistmtlError

#: The model's folder in a checkpoint's ``artifacts/`` and in the MLflow run (``artifacts/model``).
MODEL_DIR = "model"
CONFIG_FILE = "config.yaml"


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
    """A model saved by :func:`save_model`, from a local folder or an MLflow URI (``runs:/<id>/artifacts/model``,
    ``models:/<name>/<version>``), on the CPU in eval mode."""
    import mlflow.pytorch

    return mlflow.pytorch.load_model(uri, map_location="cpu").eval()


def register_trial_model(tracking_uri: str, experiment: str, trial_id: str, name: str) -> tuple[str, str]:
    """Register the model of the sweep trial ``trial_id`` (its MLflow run in ``experiment``) as ``name``;
    returns the model's run URI and the new version."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"tags.`distmtl.trial_id` = '{trial_id}'") if found else []
    if not runs:
        raise DistmtlError(f"--register: no MLflow run of trial {trial_id} in experiment '{experiment}' at {tracking_uri}")
    model_uri = f"runs:/{runs[0].info.run_id}/artifacts/{MODEL_DIR}"
    mlflow.set_tracking_uri(tracking_uri)
    return model_uri, str(mlflow.register_model(model_uri, name).version)
