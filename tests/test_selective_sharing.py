"""Selective Sharing: capture, factorisation, grouping, merging, checkpoints, DDP agreement, ground truth."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from sklearn.metrics import adjusted_rand_score

from distmtl.config.schema import ARCHITECTURE
from distmtl.data.synthetic import target_specs
from distmtl.engine import DistContext, LocalReporter, train
from distmtl.engine.checkpoint import load_checkpoint
from distmtl.engine.selective import SelectiveSharingController
from distmtl.engine.trainer import Trainer
from distmtl.errors import ConfigError
from distmtl.models import build_model
from distmtl.sharing.factorise import task_factors
from distmtl.sharing.grouping import group_tasks, prune
from distmtl.sharing.plan import Merge, plan_merges
from distmtl.tasks import build_tasks
from test_engine import _free_port

from conftest import interrupted_run, small_config

TASKS = ["fine", "coarse", "shape", "colour", "texture"]
CFG = dict(architecture="selective_sharing", channels=[8, 16], bottleneck=16, selective=dict(hidden=8))


def model(names=TASKS, seed=0):
    torch.manual_seed(seed)
    return build_model(ARCHITECTURE.of(**CFG), build_tasks(list(names), target_specs()), 3)


def test_branches_start_identical_and_outputs_keep_their_sizes():
    m = model()
    first = m.branches["b0"].state_dict()
    assert all(torch.equal(first[k], b.state_dict()[k]) for b in m.branches.values() for k in first)
    out = m(torch.rand(3, 3, 16, 16))
    assert out["fine"].shape == (3, 12) and out["shape"].shape == (3, 4) and out["texture"].shape == (3, 4)
    with pytest.raises(ConfigError, match="tasks \\['mask'\\] are dense"):
        model(["fine", "mask"])


def test_convolutional_branches_hold_the_encoders_later_stages():
    """With ``shared_stages`` the trunk keeps only the first stages; every branch starts as the same copy of
    the later stages and the bottleneck, its first convolution is the branch point, and a merged model is
    rebuilt from its structure alone (as a resumed checkpoint is)."""
    cfg = ARCHITECTURE.of(**{**CFG, "selective": dict(hidden=8, shared_stages=1)})
    torch.manual_seed(0)
    m = build_model(cfg, build_tasks(TASKS, target_specs()), 3).eval()
    assert len(m.encoder) == 1 and all(any(isinstance(layer, torch.nn.Conv2d) for layer in b.modules())
                                       for b in m.branches.values())
    first = m.branches["b0"].state_dict()
    assert all(torch.equal(first[k], b.state_dict()[k]) for b in m.branches.values() for k in first)
    assert {m.branch_point(t).shape for t in TASKS} == {torch.Size([16, 8, 3, 3])}
    x = torch.rand(3, 3, 16, 16)
    assert m(x)["fine"].shape == (3, 12) and m.representation(x).shape == (3, 8)
    m.merge([Merge("b1", ["b0", "b1"], "mean")])
    rebuilt = build_model(cfg, build_tasks(TASKS, target_specs()), 3)
    rebuilt.restore_structure(m.structure())
    rebuilt.load_state_dict(m.state_dict())
    rebuilt.eval()
    assert all(torch.equal(a, b) for a, b in zip(m(x).values(), rebuilt(x).values()))
    with pytest.raises(ConfigError, match="shared_stages: 2 leaves no stage for the branches"):
        build_model(ARCHITECTURE.of(**{**CFG, "selective": dict(shared_stages=2)}), build_tasks(TASKS, target_specs()),
                    3)


def test_bare_convolutional_branches_span_independent_networks_to_hard_sharing():
    """With ``shared_stages: 0`` and ``branch_layers: 0`` a branch is an independent network's encoder and the heads
    read its bottleneck: unmerged, the model has exactly independent networks' parameters, fully grouped exactly hard
    sharing's. Fully connected branches cannot be empty."""
    tasks = build_tasks(TASKS, target_specs())

    def built(architecture, **selective):
        own = ({"selective": dict(shared_stages=0, branch_layers=0, **selective)}
               if architecture == "selective_sharing" else {})
        common = {k: v for k, v in CFG.items() if k not in ("selective", "architecture")}
        return build_model(ARCHITECTURE.of(**common, architecture=architecture, **own), tasks, 3)

    assert built("selective_sharing").parameter_counts()["total"] == built("independent").parameter_counts()["total"]
    grouped = built("selective_sharing", groups=[TASKS])
    assert grouped.parameter_counts()["total"] == built("hard_sharing").parameter_counts()["total"]
    assert {o.shape for o in grouped.eval()(torch.rand(2, 3, 16, 16)).values()} == {(2, 12), (2, 4), (2, 6)}
    with pytest.raises(ConfigError, match="branch_layers 0 leaves fully connected branches empty"):
        small_config(**{"model.architecture": "selective_sharing", "model.selective.branch_layers": 0})


@pytest.mark.slow
def test_convolutional_branches_are_grouped_from_their_first_convolution(tmp_path):
    """Training decides from the branches' first convolutions (out × in × 3 × 3 gradients) every epoch."""
    reporter = LocalReporter(tmp_path)
    final = train(ss_config(**{"model.selective.shared_stages": 1, "model.selective.window": 1}), reporter)
    groups = json.loads((reporter.checkpoints[-1] / "artifacts" / "selective_groups_epoch001.json").read_text())
    assert set(groups["labels"]) == set(TASKS) and final["selective/branches"] <= len(TASKS)
    assert final["params/branches"] == final["selective/branches"] * model_of(
        ss_config(**{"model.selective.shared_stages": 1})).parameter_counts()["branches"] // len(TASKS)


def test_capture_does_not_alter_the_update():
    torch.manual_seed(1)
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,))
    capturing, plain = SelectiveSharingController(model()), SelectiveSharingController(model())
    plain.locked = True  # a locked controller captures nothing
    for controller in (capturing, plain):
        m = controller.model
        optimizer = torch.optim.SGD(m.parameters(), lr=0.1)
        out = m(x)
        losses = {t: out[t].float().pow(2).mean() for t in TASKS}
        losses["coarse"] = torch.nn.functional.cross_entropy(out["coarse"], y)
        controller.observe(losses, {t: 1.0 for t in TASKS})
        sum(losses.values()).backward()
        optimizer.step()
    assert capturing.epoch_gradients.flatten(1).norm(dim=1).gt(0).all() and plain.epoch_gradients is None
    capturing, plain = capturing.model, plain.model
    for (name, a), b in zip(capturing.named_parameters(), plain.parameters()):
        assert torch.equal(a, b), name


def test_captured_gradients_are_each_tasks_own_gradient_at_its_branch_point():
    """Capture through the training step's backward pass (tasks alone on their branch) and through batched
    calls (tasks sharing a branch, a task weighted 0) sums exactly what one ``autograd.grad`` call per task
    and step gives, whatever the combination of the losses (here with a non-linear term)."""
    controller = SelectiveSharingController(model())
    m = controller.model
    m.merge([Merge("b1", ["b0", "b1"], "lowest_loss")])  # fine and coarse share b1
    weights = {"fine": 1.0, "coarse": 0.5, "shape": 2.0, "colour": 0.0, "texture": 0.3}
    expected = torch.zeros(len(TASKS), *m.branch_point("fine").shape)
    torch.manual_seed(2)
    for _ in range(2):
        out = m(torch.rand(6, 3, 16, 16))
        losses = {t: out[t].float().pow(2).mean() for t in TASKS}
        for i, t in enumerate(TASKS):
            expected[i] += torch.autograd.grad(losses[t], m.branch_point(t), retain_graph=True)[0]
        controller.observe(losses, weights)
        total = sum(weights[t] * losses[t] for t in TASKS) + 0.1 * losses["shape"] ** 2
        m.zero_grad(set_to_none=True)
        total.backward()
    assert expected.flatten(1).norm(dim=1).gt(0).all()
    assert torch.allclose(controller.epoch_gradients, expected, rtol=1e-5, atol=1e-7)


def test_capture_starts_at_the_start_epoch_and_decides_once_the_window_is_full():
    """Before ``start_epoch`` training steps capture no gradient and the epoch's end decides nothing; the
    first decision comes after ``window`` captured epochs, and the window is part of the resumable state."""
    torch.manual_seed(0)
    cfg = ARCHITECTURE.of(**{**CFG, "selective": dict(hidden=8, start_epoch=1, window=2)})
    controller = SelectiveSharingController(build_model(cfg, build_tasks(TASKS, target_specs()), 3).train())
    losses = {t: 1.0 for t in TASKS}

    def step():
        out = controller.model(torch.rand(4, 3, 16, 16))
        step_losses = {t: out[t].float().pow(2).mean() for t in TASKS}
        controller.observe(step_losses, losses)
        sum(step_losses.values()).backward()

    step()
    assert controller.epoch_gradients is None
    assert not controller.end_epoch(DistContext(), 0, losses) and controller.last_plan is None
    step()
    assert controller.epoch_gradients.flatten(1).norm(dim=1).gt(0).all()
    controller.end_epoch(DistContext(), 1, losses)
    assert controller.last_plan is None and len(controller.state_dict()["window"]) == 1
    norms = controller.state_dict()["window"][0].flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms))  # every epoch weighs alike
    step()
    controller.end_epoch(DistContext(), 2, losses)
    assert set(controller.last_plan.labels) == set(TASKS)


def test_factorisation_shapes_and_determinism():
    g = np.random.default_rng(0).normal(size=(6, 8, 8))
    a, b = task_factors(g, 3), task_factors(g.copy(), 3)
    assert a.shape == (6, 3) and np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert task_factors(g, 50).shape == (6, 6)  # the rank is capped by the number of tasks


def test_factor_cosines_are_the_gradients_cosines():
    """TT-SVD's first core alone has orthonormal columns (its rows' cosines say nothing about the tasks);
    the factors carry the singular values, so when the tensor train is exact their cosines are the
    cosines of the task gradients themselves."""
    g = np.random.default_rng(1).normal(size=(4, 5, 3))
    g[1] = 2.0 * g[0] + 0.1 * g[1]
    flat = g.reshape(4, -1) / np.linalg.norm(g.reshape(4, -1), axis=1, keepdims=True)
    factors = task_factors(g, 4)
    assert np.allclose(factors @ factors.T, flat @ flat.T, atol=1e-8)
    assert (factors @ factors.T)[0, 1] > 0.99


def test_pruning_removes_members_that_do_not_agree_with_their_cluster():
    """A cluster keeps only members whose mean distance to the others is below the bound (cos > 0 for
    similarity); a cluster left with fewer than min_cluster_size members dissolves."""
    d = np.full((6, 6), 0.6)
    d[np.ix_([0, 1, 2], [0, 1, 2])] = 0.1
    d[4, 5] = d[5, 4] = 0.55
    np.fill_diagonal(d, 0.0)
    labels = prune(np.array([0, 0, 0, 0, 1, 1]), d, 0.5, 2)
    assert labels.tolist() == [0, 0, 0, -1, -1, -1]
    assert prune(np.array([0, 0, 0, 0, 1, 1]), d, 0.7, 2).tolist() == [0, 0, 0, 0, 1, 1]


def planted(groups, noise=0.05, sign=None, seed=0):
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(8, 8)))[0][: len(groups)]
    rows = []
    for g, size in enumerate(groups):
        for k in range(size):
            s = 1.0 if sign is None else sign[g][k]
            rows.append(s * directions[g] + noise * rng.normal(size=8))
    factors = np.array(rows)
    return factors / np.linalg.norm(factors, axis=1, keepdims=True)


@pytest.mark.parametrize("criterion", ["similarity", "variance"])
def test_clustering_recovers_planted_groups(criterion):
    factors = planted([3, 2, 4])
    truth = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert adjusted_rand_score(truth, group_tasks(factors, criterion, 2)) == 1.0


def test_dissimilarity_groups_opposed_tasks():
    factors = planted([2, 2], sign=[[1, -1], [1, -1]], noise=0.02)
    labels = group_tasks(factors, "dissimilarity", 2)
    assert labels[0] == labels[1] != -1 and labels[2] == labels[3] != -1 and labels[0] != labels[2]
    similar = group_tasks(factors, "similarity", 2)
    assert similar[0] != similar[1] or similar[0] == -1


def test_plan_merges_whole_branches_and_keeps_the_lowest_loss_branch():
    branch_of = {"a": "b0", "b": "b1", "c": "b2", "d": "b2"}
    losses = {"a": 0.9, "b": 0.2, "c": 0.5, "d": 0.7}
    (merge,) = plan_merges({"a": 0, "b": 0, "c": 1, "d": -1}, branch_of, losses, "lowest_loss")
    assert merge == Merge("b1", ["b0", "b1"], "lowest_loss")
    (merge,) = plan_merges({"a": 0, "b": -1, "c": 0, "d": -1}, branch_of, losses, "lowest_loss")
    assert merge.members == ["b0", "b2"] and merge.survivor == "b2"  # mean(0.5, 0.7) < 0.9


@pytest.mark.parametrize("rule", ["lowest_loss", "mean", "max", "min"])
def test_merge_keeps_the_chosen_weights_and_every_tasks_output(rule):
    m = model().eval()
    with torch.no_grad():
        for i, branch in enumerate(m.branches.values()):
            for p in branch.parameters():
                p.add_(0.1 * (i + 1))
    x = torch.rand(2, 3, 16, 16)
    before = m(x)
    expected = {n: torch.stack([m.branches[b].get_parameter(n) for b in ("b0", "b3")])
                for n, _ in m.branches["b3"].named_parameters()}
    survivor = "b3" if rule == "lowest_loss" else "b0"
    m.merge([Merge(survivor, ["b0", "b3"], rule)])
    assert (set(m.branches) == {"b1", "b2", "b4"} | {survivor}
            and m.branch_of["fine"] == m.branch_of["colour"] == survivor)
    for name, param in m.branches[survivor].named_parameters():
        reduced = {"lowest_loss": expected[name][1], "mean": expected[name].mean(0), "max": expected[name].amax(0),
                   "min": expected[name].amin(0)}[rule]
        assert torch.allclose(param, reduced)
    after = m(x)
    untouched = ["coarse", "shape", "texture"]
    assert all(torch.equal(before[t], after[t]) for t in untouched)
    if rule == "lowest_loss":
        assert torch.equal(after["colour"], before["colour"])  # colour stayed on the surviving branch b3
        assert not torch.equal(after["fine"], before["fine"])  # fine now reads b3


def test_survivor_is_chosen_on_losses_relative_to_the_first_epoch():
    """A regression loss (MSE, small) and a cross-entropy (large) are not on one scale: the branch whose tasks'
    losses fell most since the first epoch survives, not the one with the smallest raw loss."""
    controller = SelectiveSharingController(model(["fine", "shape"]))
    controller.first_losses = {"fine": 2.5, "shape": 0.05}
    relative = controller.relative({"fine": 0.5, "shape": 0.04})
    assert relative == pytest.approx({"fine": 0.2, "shape": 0.8})
    (merge,) = plan_merges({"fine": 0, "shape": 0}, {"fine": "b0", "shape": "b1"}, relative, "lowest_loss")
    assert merge.survivor == "b0"


def test_fixed_groups_share_a_branch_from_the_start_and_never_change(tmp_path):
    """``selective.groups`` (a grouping found earlier, trained from scratch): its tasks share one branch from the
    first step, the structure is locked, nothing is captured, and the branch count stays put."""
    m = grouped_model([["coarse", "fine"], ["colour"]])
    assert m.branch_of == {"fine": "b0", "coarse": "b0", "shape": "b2", "colour": "b3", "texture": "b4"}
    assert list(m.branches) == ["b0", "b2", "b3", "b4"]
    reporter = LocalReporter(tmp_path)
    config = ss_config(**{"model.selective.groups": [["fine", "coarse", "shape"]], "model.selective.start_epoch": 0,
                          "model.selective.window": 1, "model.selective.patience": 1, "optim.epochs": 2})
    trainer = Trainer(config, reporter)
    assert trainer.controller.locked and not trainer.controller.capturing
    final = train(config, reporter)
    assert [r["selective/branches"] for r in reporter.history] == [3, 3]
    assert final["selective/locked"] == 1.0 and final["selective/lock_epoch"] == -1
    assert load_checkpoint(reporter.checkpoints[-1]).structure["branch_of"]["shape"] == "b0"
    for bad, message in (([["fine", "mask"]], "names tasks \\['mask'\\] that are not trained"),
                         ([["fine", "coarse"], ["coarse"]], "puts \\['coarse'\\] in two groups"), ([[]], "is empty")):
        with pytest.raises(ConfigError, match=message):
            grouped_model(bad)


def grouped_model(groups):
    return build_model(ARCHITECTURE.of(**{**CFG, "selective": dict(hidden=8, groups=groups)}),
                       build_tasks(TASKS, target_specs()), 3)


def test_optimizer_state_survives_for_kept_parameters():
    config = small_config(**{"tasks": TASKS, "model.architecture": "selective_sharing", "model.selective.hidden": 8})
    trainer = Trainer(config, LocalReporter())
    m, optimizer = trainer.model, trainer.optimizer
    sum(o.float().sum() for o in m(torch.rand(2, 3, 16, 16)).values()).backward()
    optimizer.step()
    kept = m.branches["b1"][0].weight
    state = copy.deepcopy(optimizer.state[kept])
    m.merge([Merge("b1", ["b0", "b1"], "lowest_loss")])
    rebuilt = trainer._rebuild_optimizer()
    assert all(torch.equal(rebuilt.state[kept][k], v) for k, v in state.items() if torch.is_tensor(v))
    assert sum(len(g["params"]) for g in rebuilt.param_groups) == len(list(m.parameters()))


def model_of(config):
    """The untrained model a config builds (all branches still apart)."""
    return build_model(config.model, build_tasks(config.tasks, target_specs()), 3)


def ss_config(**overrides):
    base = {"tasks": TASKS, "model.architecture": "selective_sharing", "model.selective.hidden": 32,
            "data.num_samples": 1500, "data.image_size": 32, "model.channels": [16, 32, 64], "model.bottleneck": 64,
            "optim.epochs": 2, "optim.lr": 0.003, "data.batch_size": 64}
    return small_config(**{**base, **overrides})


GEOMETRY, APPEARANCE = ("fine", "coarse", "shape"), ("colour", "texture")
TRUTH = {"fine": 0, "coarse": 0, "shape": 0, "colour": 1, "texture": 2}


@pytest.mark.slow
def test_groups_agree_with_the_generators_construction(tmp_path):
    """Geometry tasks (fine, coarse, shape) are related by construction; colour and texture are
    independent of them and of each other. Over several data and training seeds, the groups found
    agree with that construction (adjusted Rand index), fine and coarse (coarse = fine // 3) share a
    branch in most of them, and merged models count their parameters right."""
    scores, together = [], 0
    for seed in (0, 1, 2):
        reporter = LocalReporter(tmp_path / str(seed))
        config = ss_config(**{"train.seed": seed, "data.seed": seed, "optim.epochs": 6})
        final = train(config, reporter)
        branch_of = load_checkpoint(reporter.checkpoints[-1]).structure["branch_of"]
        scores.append(adjusted_rand_score([TRUTH[t] for t in TASKS], [branch_of[t] for t in TASKS]))
        together += branch_of["fine"] == branch_of["coarse"]
        unmerged = model_of(config).parameter_counts()
        branch = unmerged["branches"] // len(TASKS)
        branches = [r["selective/branches"] for r in reporter.history]
        assert branches == sorted(branches, reverse=True)  # merged, and never split again
        merged_away = len(TASKS) - branches[-1]
        assert final["params/branches"] == branches[-1] * branch
        assert final["params/total"] == unmerged["total"] - merged_away * branch
    assert np.mean(scores) >= 0.6 and together >= 2, (scores, together)


def test_no_capture_or_merge_before_the_start_epoch(tmp_path):
    """With start_epoch 1, epoch 0 keeps every branch and decides nothing (no task labels, no relatedness
    figure); with a one-epoch window, epoch 1 groups the tasks from its own gradients."""
    reporter = LocalReporter(tmp_path)
    train(ss_config(**{"model.selective.start_epoch": 1, "model.selective.window": 1}), reporter)
    assert [r["selective/branches"] for r in reporter.history][0] == len(TASKS)
    for epoch, checkpoint in enumerate(reporter.checkpoints):
        files = sorted(p.name for p in (checkpoint / "artifacts").iterdir())
        groups = json.loads((checkpoint / "artifacts" / f"selective_groups_epoch{epoch:03d}.json").read_text())
        decided = epoch >= 1
        assert (f"selective_relatedness_epoch{epoch:03d}.png" in files) == decided
        assert set(groups["labels"]) == (set(TASKS) if decided else set())


def test_locks_after_patience_epochs_without_a_merge():
    """With min_cluster_size above the number of tasks nothing can group: after ``patience`` quiet epochs the
    structure locks, at the epoch that completed the count, and the branches never change."""
    config = small_config(**{"tasks": ["fine", "colour", "shape"], "model.architecture": "selective_sharing",
                             "model.selective.hidden": 8, "model.selective.min_cluster_size": 4,
                             "model.selective.patience": 2, "model.selective.window": 1, "optim.epochs": 3})
    reporter = LocalReporter()
    final = train(config, reporter)
    assert [r["selective/locked"] for r in reporter.history] == [0.0, 1.0, 1.0]
    assert [r["selective/lock_epoch"] for r in reporter.history] == [-1, 1, 1]
    assert [r["selective/branches"] for r in reporter.history] == [3, 3, 3] and final["selective/lock_epoch"] == 1


@pytest.mark.slow
def test_resuming_after_a_merge_rebuilds_the_merged_model(tmp_path):
    straight = train(ss_config(**{"optim.epochs": 3}), LocalReporter())
    first = interrupted_run(ss_config(**{"optim.epochs": 3}), tmp_path, epochs=2)
    assert load_checkpoint(first.checkpoints[-1]).structure["branch_of"]["coarse"] == \
        load_checkpoint(first.checkpoints[-1]).structure["branch_of"]["fine"]
    resumed_reporter = LocalReporter(resume_from=first.checkpoints[-1])
    resumed = train(ss_config(**{"optim.epochs": 3}), resumed_reporter)
    assert resumed["selective/branches"] == straight["selective/branches"] < len(TASKS)
    for key in ("val/loss", "test/fine/accuracy", "test/shape/mse", "selective/branch_map_crc32"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-5), key


def _ddp_worker(rank: int, port: int, config_dict: dict, results) -> None:
    import os

    import torch.distributed as dist

    from distmtl.config import config_from_dict
    from distmtl.engine import DistContext

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    reporter = LocalReporter()
    train(config_from_dict(config_dict), reporter, DistContext.current(torch.device("cpu")))
    results[rank] = [(r["selective/branch_map_crc32"], r["selective/branches"], r["train/shape/loss"])
                     for r in reporter.history]
    dist.destroy_process_group()


@pytest.mark.subprocess
def test_two_ddp_ranks_end_with_the_same_branch_map():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(_free_port(), ss_config(**{"optim.epochs": 3}).model_dump(), results), nprocs=2)
        a, b = results[0], results[1]
    assert [r[:2] for r in a] == [r[:2] for r in b] and a[-1][1] < len(TASKS)
