"""The cluster-launcher configs validate against Ray's own schema; scripts/tune.py is `distmtl tune`."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

from conftest import REPO


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-gcp.yaml"])
def test_cluster_config_is_valid_for_the_ray_cluster_launcher(name):
    config = yaml.safe_load((REPO / "cluster" / name).read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    assert any("pip install" in c and "/home/ray/distmtl" in c for c in config["setup_commands"])
    assert any(c.startswith("nohup mlflow server") for c in config["head_start_ray_commands"])
    assert config["file_mounts"]["/home/ray/distmtl"] == "."


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-gcp.yaml"])
def test_every_node_gets_rays_auth_token_and_mode(name):
    """Workers join a token-authenticated head only with RAY_AUTH_MODE=token and the head's token; file mounts
    and docker run options reach the head and every worker node alike."""
    config = yaml.safe_load((REPO / "cluster" / name).read_text())
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--env=RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert not {"head_run_options", "worker_run_options"} & set(config["docker"])


@pytest.mark.subprocess
def test_submit_script_takes_the_tune_arguments():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "tune.py"), "--space",
                           str(REPO / "search_spaces" / "quick.yaml"), "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "model.bottleneck" in proc.stdout and "asha" in proc.stdout
