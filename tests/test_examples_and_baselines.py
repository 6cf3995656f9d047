"""Every example config trains (shrunk to seconds); the transfer baseline and Kendall τ."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import kendalltau

from distmtl.cli import main
from distmtl.config import load_config, parse_set_args
from distmtl.engine import LocalReporter, train
from distmtl.evaluation.representation import kendall_tau
from distmtl.evaluation.transfer import transfer_baseline
from distmtl.tune.space import Space

from conftest import REPO

CONFIGS = sorted(p for p in (REPO / "search_spaces" / "configs").glob("*.yaml") if p.stem != "aux_transfer")
SHRINK = ["data.num_samples=160", "data.image_size=32", "optim.epochs=1", "data.batch_size=32", "model.bottleneck=16"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_example_config_trains(path):
    config = load_config(path, parse_set_args(SHRINK))
    final = train(config, LocalReporter())
    tested = [k for k in final if k.startswith("test/") and not k.endswith("/loss")]
    assert tested and all(not math.isnan(final[k]) for k in tested if "shape" not in k)
    assert final["params/total"] > 0


@pytest.mark.parametrize("space", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_search_space_validates(space):
    Space(space)


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
