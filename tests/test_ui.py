"""`distmtl ui`: the MLflow UI on distmtl's store, opened at the latest sweep."""

import os
import signal
import subprocess
import sys

import pytest
import requests
from mlflow.tracking import MlflowClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from distmtl.cli import main
from distmtl.tracking.ui import latest_sweep_path

from conftest import free_port


def store_with_a_sweep(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    older = client.create_experiment("older")
    client.create_run(older, tags={"distmtl.sweep_of": "/r/older"})
    sweep = client.create_experiment("sweep")
    parent = client.create_run(sweep, tags={"distmtl.sweep_of": "/r/sweep"})
    client.create_run(sweep, tags={"mlflow.parentRunId": parent.info.run_id})
    return uri, f"#/experiments/{sweep}/runs/{parent.info.run_id}"


def test_the_latest_sweep_is_the_most_recently_started_parent_run(tmp_path):
    uri, expected = store_with_a_sweep(tmp_path)
    assert latest_sweep_path(uri) == expected


def test_a_missing_store_is_refused_without_creating_one(tmp_path, capsys):
    missing = tmp_path / "none.db"
    assert main(["ui", "--mlflow-uri", f"sqlite:///{missing}"]) == 2
    assert "no MLflow store" in capsys.readouterr().err and not missing.exists()


@pytest.mark.subprocess
def test_ui_serves_the_store_on_localhost_and_prints_the_sweeps_url(tmp_path):
    """The UI answers on 127.0.0.1 at the printed address, which points at the latest sweep's parent run."""
    uri, expected = store_with_a_sweep(tmp_path)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "distmtl", "ui", "--mlflow-uri", uri, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               cwd=tmp_path)
    try:
        first = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/{expected}" in first
        seen = []
        for line in process.stdout:  # the server says when its application is up (uvicorn's startup line)
            seen.append(line)
            if "Application startup complete" in line:
                break
        assert process.poll() is None, "".join(seen)
        # a worker starts listening just after that line: connection attempts are retried (bounded, with backoff)
        with requests.Session() as session:
            session.mount("http://", HTTPAdapter(max_retries=Retry(connect=8, backoff_factor=0.1)))
            assert session.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
