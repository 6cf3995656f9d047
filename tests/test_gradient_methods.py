"""Gradient-level and per-step weighting methods: each against its reference (torchjd's own aggregator, or the
paper's formula on a hand-checked case), the parameter split, exactness under two gloo ranks, state across a
checkpoint, and the one-line refusals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torchjd.aggregation import IMTLG, MGDA, AlignedMTL, CAGrad, ConFIG, DualProj, GradDrop, NashMTL, PCGrad, UPGrad

from distmtl.config.schema import ARCHITECTURE, WEIGHTING
from distmtl.data.sources import check_targets
from distmtl.engine import DistContext, LocalReporter, train
from distmtl.errors import ConfigError
from distmtl.models import build_model
from distmtl.tasks import build_tasks
from distmtl.weighting import WEIGHTINGS, ParameterSplit, Step, build_weighting, exactness, split_parameters
from distmtl.weighting.aggregation import GradientWeighting
from test_engine import _free_port

from conftest import interrupted_run, small_config

GRADIENT_METHODS = sorted(m for m in WEIGHTINGS if WEIGHTINGS.get(m).kind == "gradient")
JACOBIAN = torch.tensor([[1.0, -2.0, 0.5, 3.0, -1.0], [-0.5, 1.0, 2.0, -1.0, 0.0], [2.0, 0.5, -1.0, 0.0, 1.5]])
TASKS = ["a", "b", "c"]


def method(name: str, tasks: list[str] = TASKS, **settings) -> GradientWeighting:
    return build_weighting(WEIGHTING.of(method=name, **settings), tasks)


def test_at_least_twelve_methods_of_both_kinds_are_registered():
    kinds = {m: WEIGHTINGS.get(m).kind for m in WEIGHTINGS}
    assert len(kinds) >= 12
    assert {"pcgrad", "cagrad", "mgda", "imtl_g", "nash_mtl", "aligned_mtl", "upgrad"} <= set(GRADIENT_METHODS)
    assert {"fixed", "dwa", "uncertainty", "gradnorm", "rlw", "famo"} <= {m for m, k in kinds.items() if k == "loss"}


@pytest.mark.parametrize("name, reference", [
    ("upgrad", UPGrad()), ("mgda", MGDA()), ("cagrad", CAGrad(c=0.4)), ("imtl_g", IMTLG()),
    ("aligned_mtl", AlignedMTL()), ("dualproj", DualProj()), ("config", ConFIG()),
    ("nash_mtl", NashMTL(n_tasks=3, max_norm=1.0, update_weights_every=1, optim_niter=20)),
])
def test_each_aggregator_is_torchjd_s_own_on_a_fixed_jacobian(name, reference):
    direction, weights = method(name).aggregate(JACOBIAN)
    assert torch.allclose(direction, reference(JACOBIAN), atol=1e-5)
    assert weights.shape == (3,) and torch.allclose(weights @ JACOBIAN, direction, atol=1e-4)


@pytest.mark.parametrize("name, reference", [("pcgrad", PCGrad()), ("graddrop", GradDrop())])
def test_random_aggregators_draw_what_torchjd_draws_under_the_same_seed(name, reference):
    torch.manual_seed(7)
    expected = reference(JACOBIAN)
    torch.manual_seed(7)
    assert torch.allclose(method(name).aggregate(JACOBIAN)[0], expected, atol=1e-6)


def test_pcgrad_projects_two_conflicting_gradients_off_each_other():
    """g1 = (1, 0), g2 = (−1, 1) conflict (g1·g2 = −1): g1 − (g1·g2/‖g2‖²)·g2 = (½, ½), g2 − (g2·g1/‖g1‖²)·g1 = (0, 1);
    the update is their sum (½, 3/2), whatever the order."""
    direction, _ = method("pcgrad", ["a", "b"]).aggregate(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    assert torch.allclose(direction, torch.tensor([0.5, 1.5]))


def test_mgda_finds_the_minimum_norm_point_of_the_hull():
    """g1 = (2, 0), g2 = (0, 1): ‖w·g1 + (1 − w)·g2‖² = 4w² + (1 − w)² is least at w = 0.2, the point (0.4, 0.8)."""
    direction, weights = method("mgda", ["a", "b"]).aggregate(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(direction, torch.tensor([0.4, 0.8]), atol=1e-3)
    assert torch.allclose(weights, torch.tensor([0.2, 0.8]), atol=1e-3)


def test_nash_mtl_weighs_orthogonal_gradients_by_their_inverse_norms():
    """For orthogonal gradients (J·Jᵀ)·α = 1/α gives αₖ = 1/‖gₖ‖: the update is the sum of the unit gradients."""
    direction, weights = method("nash_mtl", ["a", "b"], max_norm=0.0).aggregate(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))
    assert torch.allclose(weights, torch.tensor([0.5, 2.0]), atol=1e-3)
    assert torch.allclose(direction, torch.tensor([1.0, 1.0]), atol=1e-3)


def test_cagrad_with_c_zero_is_the_average_gradient_and_imtl_g_projects_equally():
    assert torch.allclose(method("cagrad", c=0.0).aggregate(JACOBIAN)[0], JACOBIAN.mean(0), atol=1e-4)
    direction, _ = method("imtl_g").aggregate(JACOBIAN)
    projections = (JACOBIAN / JACOBIAN.norm(dim=1, keepdim=True)) @ direction
    assert torch.allclose(projections, projections[0].expand(3), atol=1e-4)


def test_upgrad_conflicts_with_no_task_and_graddrop_with_full_leak_sums_the_gradients():
    assert (JACOBIAN @ method("upgrad").aggregate(JACOBIAN)[0] >= -1e-6).all()
    torch.manual_seed(0)
    assert torch.allclose(method("graddrop", leak=1.0).aggregate(JACOBIAN)[0], JACOBIAN.sum(0))


@pytest.mark.subprocess
def test_two_ranks_equal_one_process_on_the_union_of_their_batches():
    """After 3 Adam steps on two gloo ranks, each holding half of every batch, both ranks hold identical parameters,
    and they equal those of one process trained on whole batches (to 1e-5, float32): gradient-level methods reduce
    the task gradients before they aggregate (count-weighted, so a task whose targets are missing on some samples is
    exact too), per-step loss weights are drawn alike. GradDrop is consistent but not compared with the union run:
    its random sign masks compare sign purities with uniform draws, where float noise in the reduced gradients may
    flip a coordinate."""
    found = exactness.measure(sorted(WEIGHTINGS))
    for name, (gap, same) in found.items():
        assert same, f"{name}: the ranks' parameters differ"
        if name != "graddrop":
            assert gap < 1e-5, f"{name}: {gap:.2e} from the union-batch run"


def test_the_exact_reduction_sends_k_times_the_shared_gradient_and_local_one():
    """With P shared parameters, own parameters O and K tasks, exact sends K·P + O + K floats per step,
    local P + O + K."""

    class Sum:
        world_size = 2

        def __init__(self) -> None:
            self.sizes = []

        def all_reduce_sum(self, tensor):
            self.sizes.append(tensor.numel())
            return tensor.mul_(2)

    model = exactness.TinyModel()
    reach = split_parameters(model, TASKS, (exactness.FEATURES,), torch.device("cpu"))
    shared = sum(p.numel() for p in reach.shared)
    own = sum(p.numel() for ps in reach.own.values() for p in ps)
    for reduction, expected in (("exact", 3 * shared + own + 3), ("local", shared + own + 3)):
        comm = Sum()
        x, targets, _ = exactness.batches()[0]
        outputs = model(x)
        losses = {t: ((outputs[t] - targets[t]) ** 2).mean() for t in TASKS}
        weighting = method("upgrad", reduction=reduction)
        weighting.backward(losses, weighting.weights(),
                           Step(model, reach, {t: torch.tensor(8) for t in TASKS}, comm, 0, 0))
        assert comm.sizes == [expected]
        assert weighting.epoch_metrics()["comm/bytes_per_step"] == 4 * expected


def test_each_task_s_parameters_split_by_what_its_loss_reaches():
    tasks = build_tasks(["fine", "coarse", "shape"], check_targets(small_config().data, ["fine", "coarse", "shape"]))
    base = {"channels": [4, 8], "bottleneck": 8}

    def split(architecture: str) -> tuple[nn.Module, ParameterSplit]:
        model = build_model(ARCHITECTURE.of(architecture=architecture, **base), tasks, 3)
        return model, split_parameters(model, list(tasks), (3, 16, 16), torch.device("cpu"))

    model, reach = split("hard_sharing")
    assert {id(p) for p in reach.shared} == {id(p) for p in model.encoder.parameters()}
    assert all({id(p) for p in reach.own[t]} == {id(p) for p in model.heads[t].parameters()} for t in tasks)
    model, reach = split("independent")
    assert reach.shared == [] and {id(p) for p in reach.own["fine"]} == {id(p) for p in model.task_parameters("fine")}
    model, reach = split("reuse_coarse")  # the coarse prediction feeds the fine head: coarse's branch is shared
    coarse = {id(p) for p in model.task_parameters("coarse")}
    assert {id(p) for p in reach.shared} == coarse and reach.own["coarse"] == []
    model, reach = split("cross_stitch")  # the units mix every branch's stages into every task
    own = {id(p) for module in (model.heads, *(b.bottleneck for b in model.branches.values()))
           for p in module.parameters()}
    assert {id(p) for p in reach.shared} == {id(p) for p in model.parameters()} - own


def test_reported_weights_are_the_static_weights_times_the_method_s():
    config = small_config(**{"weighting.method": "mgda", "weighting.weights": {"fine": 2.0}})
    final = train(config, LocalReporter())
    assert all(final[f"weight/{t}"] > 0 for t in config.tasks)
    assert final["weight/fine"] != final["weight/colour"]


def test_rlw_draws_weights_summing_to_k_alike_for_a_step_and_anew_for_the_next():
    rlw = build_weighting(WEIGHTING.of(method="rlw"), TASKS)
    step = lambda index: Step(nn.Linear(1, 1), ParameterSplit([], {}), {}, DistContext(), index, 5)  # noqa: E731
    assert torch.equal(rlw.step_weights(step(3)), rlw.step_weights(step(3)))
    assert not torch.equal(rlw.step_weights(step(3)), rlw.step_weights(step(4)))
    assert rlw.step_weights(step(3)).sum().item() == pytest.approx(3.0)


def test_famo_weighs_by_inverse_loss_and_favours_the_task_that_fell_least():
    """Equal logits: cₖ ∝ 1/Lₖ, scaled to sum to K. After a step in which task a's loss halved and b's stayed, the
    logits' Adam step raises b's weight above a's."""
    famo = build_weighting(WEIGHTING.of(method="famo"), ["a", "b"])
    coefficients = famo.coefficients(torch.tensor([1.0, 4.0], dtype=torch.float64))
    assert torch.allclose(coefficients, torch.tensor([1.6, 0.4], dtype=torch.float64))
    famo.last_losses.copy_(torch.tensor([1.0, 4.0], dtype=torch.float64))
    again = {"a": torch.tensor(0.5), "b": torch.tensor(4.0)}
    counts = {"a": torch.tensor(2), "b": torch.tensor(2)}
    famo.after_step(Step(nn.Linear(1, 1), ParameterSplit([], {}), counts, DistContext(), 0, 0, lambda: again))
    z = torch.softmax(famo.logits.detach(), dim=0)
    assert z[1] > z[0]


def test_gradnorm_lowers_the_weight_of_the_task_with_the_larger_gradient_and_keeps_the_sum():
    """Two tasks with equal losses (equal training rates) but gradient norms 3 and 1 at W: the targets are the mean
    norm for both, so the weight of the first falls and of the second rises; the weights still sum to 2."""
    gradnorm = build_weighting(WEIGHTING.of(method="gradnorm"), ["a", "b"])
    gradnorm.first_losses.copy_(torch.tensor([1.0, 1.0], dtype=torch.float64))
    gradnorm._update_weights(torch.tensor([3.0, 1.0], dtype=torch.float64),
                             torch.tensor([1.0, 1.0], dtype=torch.float64))
    weights = gradnorm.task_weights.detach()
    assert weights[0] < 1.0 < weights[1] and weights.sum().item() == pytest.approx(2.0)


@pytest.mark.parametrize("name", ["famo", "nash_mtl", "gradnorm", "pcgrad"])
def test_a_resumed_run_continues_a_method_s_state_exactly(tmp_path, name):
    """FAMO's logits and their Adam state, Nash-MTL's last weights, GradNorm's weights and first losses and PCGrad's
    seeded order survive a checkpoint: stopped after 2 of 3 epochs and resumed, a run ends where an uninterrupted one
    does."""
    config = small_config(**{"weighting.method": name, "optim.epochs": 3})
    uninterrupted = train(config, LocalReporter())
    first = interrupted_run(config, tmp_path / "a", epochs=2)
    resumed = train(config, LocalReporter(resume_from=first.checkpoints[-1]))
    for key in ("train/loss", "val/loss", "test/fine/accuracy"):
        assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-4, abs=1e-6), key


def _trainer_worker(rank: int, port: int, config_dicts: dict, results) -> None:
    import os

    import torch.distributed as dist

    from distmtl.config import config_from_dict
    from distmtl.engine import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    for name, config in config_dicts.items():
        trainer = Trainer(config_from_dict(config), LocalReporter(), DistContext.current(torch.device("cpu")))
        trainer.fit()
        results[(rank, name)] = [p.detach().clone() for p in trainer.model.parameters()]
    dist.destroy_process_group()


@pytest.mark.subprocess
def test_the_engine_keeps_both_ranks_identical_under_random_and_gradient_methods():
    """Through the real trainer (no DDP wrapper for gradient-level methods, rank 0's batch-norm buffers broadcast
    before each forward pass, as DDP does): PCGrad, GradDrop and FAMO end with identical weights on both ranks."""
    configs = {name: small_config(**{"weighting.method": name}).model_dump() for name in ("pcgrad", "graddrop", "famo")}
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_trainer_worker, args=(_free_port(), configs, results), nprocs=2, join=True)
        results = dict(results)
    for name in configs:
        assert all(torch.equal(a, b) for a, b in zip(results[(0, name)], results[(1, name)])), name


def test_bf16_autocast_trains_a_gradient_method_on_the_cpu():
    final = train(small_config(**{"weighting.method": "upgrad", "train.precision": "bf16"}), LocalReporter())
    assert math.isfinite(final["train/loss"]) and math.isfinite(final["test/fine/accuracy"])


@pytest.mark.parametrize("overrides, message", [
    ({"weighting.method": "pcgrad", "weighting.temperature": 2.0},
     "weighting.temperature: a setting of weighting method 'dwa', not of 'pcgrad'"),
    ({"weighting.method": "pcgrad", "weighting.c": 0.5}, "weighting.c: a setting of weighting method 'cagrad'"),
    ({"weighting.method": "pcgard"}, "weighting.method: unknown weighting method 'pcgard' (available: "),
    ({"weighting.method": "cagrad", "weighting.c": -1}, "weighting.c: Input should be greater than or equal to 0"),
])
def test_a_setting_of_another_method_or_an_unknown_method_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=None) as raised:
        small_config(**overrides)
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("overrides, message", [
    ({"weighting.method": "mgda", "model.architecture": "selective_sharing"},
     "weighting.method: 'mgda' aggregates task gradients over a fixed set of shared parameters"),
    ({"weighting.method": "gradnorm", "model.architecture": "independent"},
     "gradnorm balances gradient norms at the last shared weight matrix"),
])
def test_a_method_that_cannot_train_the_architecture_is_refused_before_anything_starts(overrides, message):
    from distmtl.engine.assembly import check_config

    with pytest.raises(ConfigError) as raised:
        check_config(small_config(**overrides))
    assert message in str(raised.value) and "\n" not in str(raised.value)
