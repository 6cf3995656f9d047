import pytest
import torch

from distmtl.config.schema import ModelConfig, WeightingConfig
from distmtl.data.synthetic import target_specs
from distmtl.engine import LocalReporter, train
from distmtl.errors import ConfigError
from distmtl.models import build_model
from distmtl.models.encoders import ENCODERS
from distmtl.tasks import build_tasks
from distmtl.weighting import build_weighting

from conftest import small_config

SIX = ["independent", "hard_sharing", "reuse_coarse", "reuse_fine", "shared_reuse_coarse", "shared_reuse_fine"]
CFG = dict(channels=[8, 16], bottleneck=16)


def tasks(names=("fine", "coarse", "shape")):
    return build_tasks(list(names), target_specs())


@pytest.mark.parametrize("architecture", SIX)
def test_forward_backward_and_parameter_split(architecture):
    model = build_model(ModelConfig(architecture=architecture, **CFG), tasks(), 3)
    out = model(torch.rand(4, 3, 16, 16))
    assert out["fine"].shape == (4, 12) and out["coarse"].shape == (4, 4) and out["shape"].shape == (4, 4)
    sum(o.sum() for o in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    counts = model.parameter_counts()
    assert counts["total"] == counts["shared"] + sum(counts[t] for t in ("fine", "coarse", "shape"))


def test_independent_has_about_k_times_the_encoder():
    cfg = ModelConfig(architecture="independent", **CFG)
    encoder = sum(p.numel() for p in ENCODERS.get("small_cnn")(cfg, 3).parameters())
    model = build_model(cfg, tasks(), 3)
    counts = model.parameter_counts()
    heads = sum(p.numel() for p in model.heads.parameters())
    assert counts["shared"] == 0 and counts["total"] == 3 * encoder + heads
    shared = build_model(ModelConfig(architecture="hard_sharing", **CFG), tasks(), 3).parameter_counts()
    assert shared["shared"] == encoder


@pytest.mark.parametrize("architecture, source, target", [
    ("reuse_coarse", "coarse", "fine"), ("shared_reuse_coarse", "coarse", "fine"),
    ("reuse_fine", "fine", "coarse"), ("shared_reuse_fine", "fine", "coarse")])
def test_label_reuse_head_receives_the_other_heads_output(architecture, source, target):
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture=architecture, **CFG), tasks(), 3).eval()
    assert model.heads[target].in_features == 16 + model.heads[source].linear.out_features
    x = torch.rand(3, 3, 16, 16)
    before = model(x)
    with torch.no_grad():
        model.heads[source].linear.bias.add_(torch.arange(model.heads[source].linear.out_features).float())
    after = model(x)
    assert not torch.allclose(before[target], after[target])  # changing the source head moves the target
    assert torch.allclose(before["shape"], after["shape"])


def test_label_reuse_needs_the_fine_and_coarse_tasks():
    with pytest.raises(ConfigError, match="model.coarse_task: 'coarse' must be one of the classification tasks"):
        build_model(ModelConfig(architecture="reuse_coarse", **CFG), tasks(("fine", "shape")), 3)


def test_uncertainty_log_variances_move_and_weights_follow():
    config = small_config(**{"weighting.method": "uncertainty", "optim.epochs": 3, "optim.lr": 0.05})
    reporter = LocalReporter()
    train(config, reporter)
    weights = [r["weight/fine"] for r in reporter.history]
    assert weights[0] == 0.5 and weights[1] != weights[0] and weights[2] != weights[1]


def test_uncertainty_combines_losses_as_defined():
    w = build_weighting(WeightingConfig(method="uncertainty", weights={"b": 2.0}), ["a", "b"])
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.0, 1.0]))
    total = w.combine({"a": torch.tensor(3.0), "b": torch.tensor(4.0)}, w.weights())
    expected = 0.5 * 3.0 + 2.0 * 0.5 * (torch.exp(torch.tensor(-1.0)) * 4.0 + 1.0)
    assert torch.isclose(total, expected)
    total.backward()
    assert w.log_vars.grad is not None and w.log_vars.grad[0] == pytest.approx(0.5 * (1 - 3.0))
