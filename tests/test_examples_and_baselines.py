"""Every example config trains (shrunk to seconds); the transfer baseline and Kendall τ."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import kendalltau

from distmtl.cli import main
from distmtl.config import load_config, parse_set_args
from distmtl.data.sources import build_samples
from distmtl.engine import LocalReporter, train
from distmtl.engine.assembly import build_parts
from distmtl.engine.checkpoint import load_checkpoint
from distmtl.evaluation.representation import kendall_tau
from distmtl.evaluation.transfer import transfer_baseline
from distmtl.tune.space import Space

from conftest import REPO

CONFIGS = sorted((REPO / "search_spaces" / "configs").glob("*.yaml"))
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))
SHRINK = ["data.num_samples=160", "data.image_size=32", "optim.epochs=1", "optim.warmup_epochs=0", "data.batch_size=32",
          "model.bottleneck=16"]


@pytest.fixture(scope="module")
def aux_run(tmp_path_factory) -> str:
    """What aux_transfer.yaml's comment tells users to run first: a one-task run of segmentation_only.yaml
    (hard sharing, the same encoder widths); returns its checkpoint directory."""
    overrides = parse_set_args(SHRINK + ["tasks=[bbox]", "train.selection_metric=val/bbox/iou"])
    reporter = LocalReporter(tmp_path_factory.mktemp("aux-bbox"))
    train(load_config(REPO / "search_spaces/configs/segmentation_only.yaml", overrides), reporter)
    return str(reporter.checkpoints[-1])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_example_config_trains(path, request, tmp_path):
    """Every task gets finite test metrics, the selection metric is reported, and the reported parameter
    counts are those of the model the run saved."""
    extra = [f"model.aux_checkpoints=[{request.getfixturevalue('aux_run')}]"] if path.stem == "aux_transfer" else []
    config = load_config(path, parse_set_args(SHRINK + extra))
    reporter = LocalReporter(tmp_path)
    final = train(config, reporter)
    for task in config.tasks:
        tested = [k for k in final if k.startswith(f"test/{task}/")]
        assert len(tested) >= 2 and all(math.isfinite(final[k]) for k in tested), (task, tested)
    assert math.isfinite(final[config.train.selection_metric]) and final["best_epoch"] == 0

    channels = build_samples(config.data, config.tasks).image_shape[0]
    model = build_parts(config, channels).model
    state = load_checkpoint(reporter.checkpoints[-1])
    model.restore_structure(state.structure)
    model.load_state_dict(state.model)
    assert {k: final[f"params/{k}"] for k in model.parameter_counts()} == model.parameter_counts()


def _lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


@pytest.mark.parametrize("space", SPACES, ids=lambda p: p.stem)
def test_every_search_space_validates(space):
    """Every value a space can propose (each choice, both bounds; a conditional parameter's in a trial where its
    condition holds) makes a valid trial config that carries it."""
    loaded = Space(space)
    for key, parameter in loaded.file.parameters.items():
        candidates = parameter.values if parameter.type == "choice" else [parameter.low, parameter.high]
        condition = {name: values[0] for name, values in parameter.condition().items()}
        for value in candidates:
            value = int(value) if parameter.type == "randint" else value
            assert _lookup(loaded.trial_config({**condition, key: value}).model_dump(), key) == value


def test_transfer_baseline_reports_mapping_metrics_like_the_joint_model(tmp_path, capsys):
    config = load_config(REPO / "search_spaces/configs/quick.yaml", parse_set_args(SHRINK + ["data.num_samples=300"]))
    result = transfer_baseline(config, "fine", "shape")
    for metric in ("mse", "mae", "med", "r2", "kendall_tau"):
        assert not math.isnan(result[f"transfer/test/shape/{metric}"])
    assert "test/fine/accuracy" in result and result["transfer/ridge_alpha"] > 0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["baseline", "--config", str(REPO / "search_spaces/configs/quick.yaml"), "--classify", "fine",
                 "--map", "shape", "--mlflow-uri", uri, *sum((["--set", s] for s in SHRINK), [])]) == 0
    assert "transfer/test/shape/r2" in capsys.readouterr().out


def test_kendall_tau_matches_scipy_on_pairwise_distances():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 5))
    points = features[:, :2] + rng.normal(scale=0.3, size=(12, 2))
    dissimilarity = np.linalg.norm(points[:, None] - points[None], axis=-1)
    tau, p = kendall_tau(features, dissimilarity)
    expected = kendalltau(pdist(features), pdist(points))
    assert tau == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert tau > 0.2
