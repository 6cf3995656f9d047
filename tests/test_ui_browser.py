"""`scripts/ui_check.py` against a store written here: MLflow's UI rendered by headless Chromium shows the
sweep's trials under their parent, their metrics and artifacts (skipped where Chromium is not installed)."""

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient

from distmtl.tracking.plots import save_figure

from conftest import REPO

pytestmark = pytest.mark.subprocess  # scripts/ui_check.py in its own process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def ui_check():
    spec = importlib.util.spec_from_file_location("ui_check", REPO / "scripts" / "ui_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ui_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def sweep_store(tmp_path) -> str:
    """A sweep as distmtl logs one: a parent run with two nested trials, their metrics and figures."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("sweep", artifact_location=str(tmp_path / "artifacts"), tags={
        "mlflow.experimentKind": "custom_model_development",
        "mlflow.note.content": "distmtl sweep of the search space `/spaces/tiny.yaml`"})
    parent = client.create_run(experiment, run_name="sweep-tiny", tags={"distmtl.sweep_of": "/r/tiny",
                                                                         "distmtl.space": "/spaces/tiny.yaml",
                                                                         "distmtl.best_trial_id": "t2"}).info.run_id
    client.log_metric(parent, "best/val/loss", 0.5)
    figure = tmp_path / "confusion_matrix@fine_epoch001.png"
    save_figure("confusion_matrix", {"task": "fine", "matrix": [[3, 1], [0, 4]], "class_names": ["cat", "dog"]}, figure)
    client.log_artifact(parent, str(figure))
    for trial in ("t1", "t2"):
        run = client.create_run(experiment, run_name=f"trial-{trial}", tags={
            "mlflow.parentRunId": parent, "distmtl.trial_id": trial}).info.run_id
        for epoch in range(2):
            client.log_metric(run, "val/loss", 1.0 / (epoch + 1), step=epoch)
            client.log_metric(run, "val/fine/accuracy", 0.4 + epoch / 10, step=epoch)
        client.log_artifact(run, str(figure), "artifacts")
        client.log_text(run, "tasks: [fine]\n", "config.yaml")
        client.set_terminated(run)
    client.set_terminated(parent)
    return uri


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian's `chromium` package) on PATH")
def test_the_rendered_ui_shows_the_trials_under_their_parent_with_metrics_and_artifacts(tmp_path):
    uri = sweep_store(tmp_path)
    out = tmp_path / "shots"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "ui_check.py"), "--store", uri, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and result["ok"], done.stdout + done.stderr[-2000:]
    assert result["passed"] == result["checks"] == 12 and result["trials"] == 2
    assert {p.name for p in out.glob("*.png")} == {"experiment.png", "parent.png", "trial.png", "trial-artifacts.png",
                                                   "parent-artifacts.png"}

    # the same rendered pages, checked against a store that holds one more trial, metric and file: all missed
    module = ui_check()
    store = module.read_store(uri)
    pages = {name: module.RenderedPage((out / f"{name}.html").read_text()) for name in
             ("experiment", "parent", "trial", "trial-artifacts", "parent-artifacts")}
    claimed = replace(store, trials={**store.trials, "f" * 32: "trial-t3"}, best_metrics=[*store.best_metrics, "x/y"],
                      best_files=[*store.best_files, "artifacts/more.png"])
    failed = {(c.page, c.name) for c in module.check_pages(claimed, lambda name, path, height: pages[name]) if not c.ok}
    assert failed == {("experiment", "matching runs (trials nested under the sweep's row)"),
                      ("parent", "trials listed under 'Child runs'"), ("trial", "metrics listed"),
                      ("trial-artifacts", "files in the artifact tree")}


def test_without_chromium_the_check_is_skipped_with_a_clear_message(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "ui_check.py"), "--chromium", str(tmp_path / "none"),
                           "--store", sweep_store(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("SKIPPED: no Chromium")
    assert json.loads(done.stdout.splitlines()[-1]) == {"skipped": True, "ok": None}
