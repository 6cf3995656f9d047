"""A saved model folder logged as a run's MLflow 3 logged model, what ``mlflow.<flavor>.log_model(name=...)`` makes.

MLflow's UI lists such a model under the run's "Logged models" and in the experiment's Models tab, and
``mlflow.search_logged_models`` finds it; model files logged as plain run artifacts are found by neither.
It is done with the client API (the fluent one keeps one global active run, and the Tune driver logs many
runs at once) from a folder already saved, so a model kept in the fallback journal is logged the same way
when it is replayed.
"""

from __future__ import annotations

from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.tracking import MlflowClient

_BATCH = 1000  # MLflow's limit of metrics in one log_batch


def log_model_folder(client: MlflowClient, run_id: str, folder: str, name: str) -> str:
    """Log the MLflow model saved in ``folder`` as the logged model ``name`` of run ``run_id``; returns its id.

    The model carries the run's params and is linked to the run at the run's last epoch (the latest value of its
    ``epoch`` metric): it is the run's output at that step, and the metrics the run logged at that step (the
    best-epoch and test metrics of a finished run) become the model's metrics, as ``log_model`` links them.
    Then ``runs:/<run id>/<name>`` and ``models:/<model id>`` both load it."""
    run = client.get_run(run_id)
    step = int(run.data.metrics.get("epoch", 0))
    model = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                       params=dict(run.data.params))
    client.log_model_artifacts(model.model_id, folder)
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
    latest = run.to_proto().data.metrics  # each metric's latest point, with its time and step
    linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model.model_id, run_id=run_id)
              for m in latest if m.step == step]
    for i in range(0, len(linked), _BATCH):  # same key, value, time and step: the run's history gains no point
        client.log_batch(run_id, metrics=linked[i : i + _BATCH])
    return model.model_id
