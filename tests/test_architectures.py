from itertools import chain

import pytest
import torch

from distmtl.config.schema import ARCHITECTURE, WEIGHTING, OptimConfig
from distmtl.data.synthetic import target_specs
from distmtl.engine import LocalReporter, train
from distmtl.engine.assembly import build_parts, frozen_encoders
from distmtl.engine.checkpoint import load_checkpoint
from distmtl.engine.optim import build_optimizer
from distmtl.errors import ConfigError
from distmtl.models import build_model
from distmtl.models.base import ARCHITECTURES
from distmtl.models.encoders import ENCODERS
from distmtl.tasks import build_tasks
from distmtl.weighting import build_weighting

from conftest import small_config

CFG = dict(channels=[8, 16], bottleneck=16)
SIZES = {"fine": (4, 12), "coarse": (4, 4), "shape": (4, 4)}


def registered_architectures() -> list[str]:
    """Every architecture in the registry (importing ``distmtl.models`` registers them all), so that a new one
    is tested without listing it here."""
    return list(ARCHITECTURES)


def tasks(names=("fine", "coarse", "shape")):
    return build_tasks(list(names), target_specs())


@pytest.fixture(scope="module")
def aux_checkpoint(tmp_path_factory):
    """A checkpoint directory of an earlier one-epoch hard_sharing run of the same width (for aux_transfer)."""
    reporter = LocalReporter(tmp_path_factory.mktemp("aux"))
    train(small_config(**{"tasks": ["fine"], "optim.epochs": 1}), reporter)
    return str(reporter.checkpoints[-1])


def numel(parameters) -> int:
    return sum(p.numel() for p in parameters)


@pytest.mark.parametrize("architecture", registered_architectures())
def test_model_contract(architecture, aux_checkpoint):
    """forward gives {task: output}; shared_parameters() and task_parameters(t) are disjoint parameters of the
    model covering exactly the trainable ones; each task's output reaches the shared parameters and its own;
    representation() is a batch of vectors; parameter_counts() add up (frozen parameters counted apart)."""
    torch.manual_seed(0)
    aux = architecture == "aux_transfer"
    extra = {"aux_checkpoints": [aux_checkpoint]} if aux else {}
    inputs = {"frozen_encoders": frozen_encoders([aux_checkpoint], 3)} if aux else {}
    model = build_model(ARCHITECTURE.of(architecture=architecture, **CFG, **extra), tasks(), 3, **inputs)
    x = torch.rand(4, 3, 16, 16)
    out = model(x)
    assert {t: tuple(o.shape) for t, o in out.items()} == SIZES
    representation = model.representation(x)
    assert representation.dim() == 2 and representation.shape[0] == 4 and representation.shape[1] > 0

    shared = list(model.shared_parameters())
    own = {t: list(model.task_parameters(t)) for t in SIZES}
    ids = [id(p) for p in chain(shared, *own.values())]
    assert len(ids) == len(set(ids)), "a parameter is both shared and a task's, or two tasks'"
    assert set(ids) <= {id(p) for p in model.parameters()}
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}

    for task in SIZES:
        model.zero_grad(set_to_none=True)
        model(x)[task].pow(2).sum().backward()
        reached = [p for p in chain(shared, own[task]) if p.grad is not None and p.grad.abs().sum() > 0]
        assert len(reached) == len(shared) + len(own[task]), f"{task}'s loss misses some of its parameters"
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)

    counts = model.parameter_counts()
    frozen = numel(p for p in model.parameters() if not p.requires_grad)
    assert counts["total"] == numel(model.parameters()) and counts["shared"] == numel(shared)
    assert all(counts[t] == numel(own[t]) for t in SIZES)
    assert counts["total"] == counts["shared"] + sum(counts[t] for t in SIZES) + frozen
    assert counts.get("frozen", 0) == frozen


def test_the_registry_lists_the_shipped_architectures():
    assert {"independent", "hard_sharing", "reuse_coarse", "reuse_fine", "shared_reuse_coarse", "shared_reuse_fine",
            "cross_stitch", "selective_sharing", "aux_transfer"} <= set(registered_architectures())


def test_independent_has_about_k_times_the_encoder():
    cfg = ARCHITECTURE.of(architecture="independent", **CFG)
    encoder = sum(p.numel() for p in ENCODERS.get("small_cnn")(cfg, 3).parameters())
    model = build_model(cfg, tasks(), 3)
    counts = model.parameter_counts()
    heads = sum(p.numel() for p in model.heads.parameters())
    assert counts["shared"] == 0 and counts["total"] == 3 * encoder + heads
    shared = build_model(ARCHITECTURE.of(architecture="hard_sharing", **CFG), tasks(), 3).parameter_counts()
    assert shared["shared"] == encoder


@pytest.mark.parametrize("architecture, source, target", [
    ("reuse_coarse", "coarse", "fine"), ("shared_reuse_coarse", "coarse", "fine"),
    ("reuse_fine", "fine", "coarse"), ("shared_reuse_fine", "fine", "coarse")])
def test_label_reuse_head_receives_the_other_heads_output(architecture, source, target):
    torch.manual_seed(0)
    model = build_model(ARCHITECTURE.of(architecture=architecture, **CFG), tasks(), 3).eval()
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
        build_model(ARCHITECTURE.of(architecture="reuse_coarse", **CFG), tasks(("fine", "shape")), 3)


def test_uncertainty_log_variances_move_and_weights_follow(tmp_path):
    """Each epoch's reported weight is ½·exp(−s) of the log-variance s that the previous epoch ended with;
    s moves every epoch, first towards log L: up for a task whose loss exceeds 1, down for one below 1."""
    config = small_config(**{"weighting.method": "uncertainty", "optim.epochs": 3, "optim.lr": 0.05})
    reporter = LocalReporter(tmp_path)
    train(config, reporter)
    log_vars = [load_checkpoint(c).weighting["log_vars"] for c in reporter.checkpoints]
    assert not torch.equal(log_vars[0], torch.zeros(3)) and not torch.equal(log_vars[1], log_vars[0])
    assert not torch.equal(log_vars[2], log_vars[1])
    for epoch in (1, 2):
        for i, task in enumerate(config.tasks):
            expected = 0.5 * torch.exp(-log_vars[epoch - 1][i]).item()
            assert reporter.history[epoch][f"weight/{task}"] == pytest.approx(expected, rel=1e-6)
    first = reporter.history[0]
    losses = torch.tensor([first[f"train/{t}/loss"] for t in config.tasks])
    assert (losses > 1).any() and (losses < 1).any()  # both directions are exercised
    assert torch.equal(torch.sign(log_vars[0]), torch.sign(torch.log(losses)))


def test_uncertainty_combines_losses_as_defined():
    w = build_weighting(WEIGHTING.of(method="uncertainty", weights={"b": 2.0}), ["a", "b"])
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.0, 1.0]))
    total = w.combine({"a": torch.tensor(3.0), "b": torch.tensor(4.0)}, w.weights())
    expected = 0.5 * 3.0 + 2.0 * 0.5 * (torch.exp(torch.tensor(-1.0)) * 4.0 + 1.0)
    assert torch.isclose(total, expected)
    total.backward()
    assert w.log_vars.grad is not None and w.log_vars.grad[0] == pytest.approx(0.5 * (1 - 3.0))


def test_cross_stitch_at_identity_equals_independent_branches():
    cfg = ARCHITECTURE.of(architecture="cross_stitch", cross_stitch={"alpha_same": 1.0, "alpha_cross": 0.0}, **CFG)
    torch.manual_seed(0)
    stitched = build_model(cfg, tasks(), 3).eval()
    independent = build_model(ARCHITECTURE.of(architecture="independent", **CFG), tasks(), 3).eval()
    independent.encoders.load_state_dict(stitched.branches.state_dict())
    independent.heads.load_state_dict(stitched.heads.state_dict())
    x = torch.rand(2, 3, 16, 16)
    a, b = stitched(x), independent(x)
    assert all(torch.allclose(a[t], b[t], atol=1e-6) for t in a)


def test_cross_stitch_mixes_branches_and_trains_its_units_faster():
    """With α off the diagonal, changing one branch's weights changes another task's output (at α = I it does
    not), and an optimizer step moves the units' α lr_multiplier times as far, the rest of the model alike."""
    def stitched(**cross_stitch):
        torch.manual_seed(0)
        return build_model(ARCHITECTURE.of(architecture="cross_stitch", cross_stitch=cross_stitch, **CFG), tasks(),
                           3).eval()

    x = torch.rand(2, 3, 16, 16)
    for cross_stitch, mixes in (({}, True), ({"alpha_same": 1.0, "alpha_cross": 0.0}, False)):
        model = stitched(**cross_stitch)
        before = model(x)
        with torch.no_grad():
            model.branches["fine"].stages[0][0].weight.mul_(2.0)
        after = model(x)
        assert not torch.allclose(before["fine"], after["fine"])
        assert torch.allclose(before["shape"], after["shape"]) != mixes
        assert torch.allclose(before["coarse"], after["coarse"]) != mixes

    steps = {}
    for multiplier in (1.0, 10.0):
        model = stitched(lr_multiplier=multiplier).train()
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = build_optimizer(OptimConfig(lr=1e-3), model)
        sum(o.pow(2).mean() for o in model(x).values()).backward()
        optimizer.step()
        steps[multiplier] = {n: (p.detach() - start[n]).abs() for n, p in model.named_parameters()}
    slow, fast = steps[1.0], steps[10.0]
    units = [n for n in slow if n.startswith("units.")]
    assert units and all(slow[n].sum() > 0 for n in units)
    assert all(torch.allclose(fast[n], 10 * slow[n], rtol=1e-3, atol=1e-9) for n in units)
    assert all(torch.equal(fast[n], slow[n]) for n in slow if n not in units)

    model = stitched()
    alpha = model.alphas()[0]
    assert torch.allclose(alpha.diagonal(), torch.full((3,), 0.9)) and alpha[0, 1] == pytest.approx(0.05)
    assert set(model.extra_metrics()) == {"cross_stitch/stage0/same", "cross_stitch/stage0/cross",
                                          "cross_stitch/stage1/same", "cross_stitch/stage1/cross"}
    assert model.diagnostics()["cross_stitch_alpha"]["stages"][0][0][0] == pytest.approx(0.9)


@pytest.mark.parametrize("encoder, channels, size",
                         [("sketch_a_net", 1, 224), ("resnet18", 3, 64), ("resnet34", 1, 32)])
def test_encoders_give_vector_and_stage_maps(encoder, channels, size):
    cfg = ARCHITECTURE.of(encoder=encoder, bottleneck=24, dropout=0.3)
    model = build_model(cfg, build_tasks(["fine", "mask"], target_specs()), channels).eval()
    out = model(torch.rand(2, channels, size, size))
    assert out["fine"].shape == (2, 12) and out["mask"].shape == (2, 2, size, size)
    assert model.representation(torch.rand(1, channels, size, size)).shape == (1, 24)


def test_resnet_reads_weights_only_from_a_local_file(tmp_path):
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    encoder = ENCODERS.get("resnet18")(ARCHITECTURE.of(encoder="resnet18", weights=str(tmp_path / "r18.pth")), 3)
    assert torch.equal(encoder.stages[0][0].weight, reference.conv1.weight)
    with pytest.raises(ConfigError, match="model.weights: .*missing.pth not found"):
        ENCODERS.get("resnet18")(ARCHITECTURE.of(encoder="resnet18", weights=str(tmp_path / "missing.pth")), 3)


def test_aux_transfer_fuses_frozen_encoders_of_earlier_runs(tmp_path):
    base = {"tasks": ["bbox"], "train.selection_metric": "val/bbox/iou", "optim.epochs": 1}
    aux = LocalReporter(tmp_path / "aux")
    train(small_config(**base), aux)
    target = small_config(**{"tasks": ["mask"], "model.architecture": "aux_transfer",
                             "model.aux_checkpoints": [str(aux.checkpoints[-1])], "optim.epochs": 2})
    model = build_parts(target, in_channels=3).model
    frozen = {k: v.clone() for k, v in model.aux.state_dict().items()}
    assert not any(p.requires_grad for p in model.aux.parameters())
    assert torch.equal(frozen["0.stages.0.0.weight"], aux.best_state["encoder.stages.0.0.weight"])
    reporter = LocalReporter(tmp_path / "target")
    final = train(target, reporter)
    assert final["params/frozen"] == sum(v.numel() for k, v in frozen.items()
                                         if "running" not in k and "num_batches" not in k)
    trained = load_checkpoint(reporter.checkpoints[-1]).model
    assert all(torch.equal(trained[f"aux.{k}"], v) for k, v in frozen.items())  # weights and BN statistics untouched


def test_aux_transfer_needs_checkpoints_of_the_same_width(tmp_path):
    with pytest.raises(ConfigError, match="needs at least one checkpoint"):
        build_model(ARCHITECTURE.of(architecture="aux_transfer", **CFG), tasks(), 3)
    aux = LocalReporter(tmp_path)
    train(small_config(**{"tasks": ["fine"], "optim.epochs": 1, "model.channels": [4, 8]}), aux)
    with pytest.raises(ConfigError, match=r"stage widths \[4, 8\], this model \[8, 16\]"):
        build_parts(small_config(**{"model.architecture": "aux_transfer",
                                    "model.aux_checkpoints": [str(aux.checkpoints[-1])],
                                    "model.channels": [8, 16]}), 3)
