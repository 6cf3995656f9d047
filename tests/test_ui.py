"""`distmtl ui`: the MLflow UI on distmtl's store, opened at the latest sweep."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

from mlflow.tracking import MlflowClient

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


def test_ui_serves_the_store_on_localhost_and_prints_the_sweeps_url(tmp_path):
    """The UI answers on 127.0.0.1 at the printed address, which points at the latest sweep's parent run."""
    uri, expected = store_with_a_sweep(tmp_path)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "distmtl", "ui", "--mlflow-uri", uri, "--port", str(port)],
                               stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp_path)
    try:
        first = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/{expected}" in first
        deadline, answered = time.monotonic() + 120, False
        while not answered and time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    answered = response.status == 200
            except OSError:
                time.sleep(0.5)  # the server is still starting: ask again
        assert answered, "the MLflow UI did not answer within 120 s"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
