"""Lineage on every run: the distmtl version and git commit that trained it, and its data as an MLflow input."""

import hashlib
import subprocess

import h5py
import numpy as np
from mlflow.tracking import MlflowClient

import distmtl
from distmtl.tracking import MlflowRun, lineage

from conftest import REPO, small_config


def logged(tmp_path, config):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = MlflowRun(uri, "lineage", "run", config)
    run.finish()
    return MlflowClient(uri).get_run(run.real_run_id)


def test_a_run_names_its_code_and_its_generated_data(tmp_path):
    config = small_config().model_dump()
    run = logged(tmp_path, config)
    assert run.data.tags["distmtl.version"] == distmtl.__version__
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = head.stdout.strip() if head.returncode == 0 else None  # None: not run from a git checkout
    assert run.data.tags.get("mlflow.source.git.commit") == commit
    (data,) = run.inputs.dataset_inputs
    assert data.dataset.source_type == "code" and data.dataset.name == "synthetic"
    config["data"]["seed"] = 1
    (tmp_path / "other").mkdir()
    other = logged(tmp_path / "other", config)
    assert other.inputs.dataset_inputs[0].dataset.digest != data.dataset.digest  # other data, other digest


def test_an_hdf5_file_is_named_by_a_digest_of_its_bytes(tmp_path):
    path = tmp_path / "set.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.arange(24, dtype=np.uint8).reshape(2, 3, 2, 2)
    config = small_config().model_dump()
    config["data"].update(source="hdf5", root=str(path))
    (data,) = logged(tmp_path, config).inputs.dataset_inputs
    assert data.dataset.digest == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert data.dataset.source == str(path.resolve()) and data.dataset.source_type == "local"


def test_code_outside_a_git_checkout_is_named_by_its_version_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(lineage, "_PACKAGE_ROOT", tmp_path)  # not inside any git checkout
    lineage.code_tags.cache_clear()
    try:
        assert lineage.code_tags() == {"distmtl.version": distmtl.__version__}
    finally:
        lineage.code_tags.cache_clear()
