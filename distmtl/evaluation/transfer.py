"""The transfer-learning baseline of the classification + mapping method.

Train a classifier alone, freeze it, and fit a ridge regression from its bottleneck to the
similarity-space coordinates; report MSE, MAE, MED and R² exactly as the joint model reports them
(the same metric code), on the same splits. Ridge's penalty is chosen by RidgeCV on the
training samples that carry coordinates.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from sklearn.linear_model import RidgeCV

from distmtl.config.schema import Config
from distmtl.data.sources import build_samples, check_targets
from distmtl.engine import LocalReporter, train
from distmtl.engine.loaders import make_splits
from distmtl.errors import ConfigError
from distmtl.evaluation.representation import mapping_kendall_tau, representations
from distmtl.models import build_model
from distmtl.tasks import build_tasks

ALPHAS = np.logspace(-3, 3, 13)


def transfer_baseline(config: Config, classify: str, mapping: str,
                      reporter: LocalReporter | None = None) -> dict[str, float]:
    """Train ``classify`` alone (in this process), then map its frozen bottleneck to ``mapping`` with ridge.

    Returns the classifier's test metrics, the baseline's ``transfer/test/<mapping>/<metric>``, the
    chosen ridge penalty, and Kendall τ between the test samples' representation distances and their
    distances in the mapping space. ``reporter`` (one with an output directory, e.g. one that also logs
    to MLflow) receives the classifier's epochs; by default they go to a temporary directory.
    """
    specs = check_targets(config.data, [classify, mapping])
    if specs[mapping].kind != "regression":
        raise ConfigError(f"--map: '{mapping}' is a {specs[mapping].kind} target; "
                          "the baseline maps to a regression target")
    classifier_config = config.model_copy(update={
        "tasks": [classify],
        "weighting": config.weighting.model_copy(update={"weights": {}}),
        "data": config.data.model_copy(update={"target_fraction": {}}),
        "train": config.train.model_copy(update={"selection_metric": f"val/{classify}/accuracy",
                                                 "selection_mode": "max"}),
    })
    with tempfile.TemporaryDirectory(prefix="distmtl-transfer-") as directory:
        reporter = reporter or LocalReporter(directory)
        final = train(classifier_config, reporter)
        best_state = reporter.best_state

    samples = build_samples(config.data, [classify, mapping])
    train_idx, _, test_idx = make_splits(config, samples)
    model = build_model(config.model, build_tasks([classify], samples.specs), samples.image_shape[0])
    model.load_state_dict(best_state)

    def features_and_targets(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kept = indices[samples.has_target[mapping].numpy()[indices]]
        dataset = samples.dataset(kept)
        targets = np.stack([dataset[i]["targets"][mapping].numpy() for i in range(len(kept))])
        return representations(model, dataset), targets

    x_train, y_train = features_and_targets(train_idx)
    x_test, y_test = features_and_targets(test_idx)
    ridge = RidgeCV(alphas=ALPHAS).fit(x_train, y_train)
    predicted = torch.from_numpy(ridge.predict(x_test)).float()
    task = build_tasks([mapping], samples.specs)[mapping]
    state = task.metric_state(predicted, torch.from_numpy(y_test).float(), torch.ones(len(y_test), dtype=torch.bool))
    result = {k: v for k, v in final.items() if k.startswith("test/")}
    result.update({f"transfer/test/{mapping}/{name}": value for name, value in task.metrics(state).items()})
    result["transfer/ridge_alpha"] = float(ridge.alpha_)
    result[f"transfer/test/{mapping}/kendall_tau"] = mapping_kendall_tau(model, samples, test_idx, mapping)
    return result
