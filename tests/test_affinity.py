"""Task affinity (distmtl.engine.affinity): the lookahead against a hand computation with SGD and Adam, exactness on 2
gloo ranks, that measuring leaves training as it was, the grouping search (distmtl.sharing.choose) and the planted
partition it must find."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from distmtl.engine.affinity import AffinityProbe, lookahead_step
from distmtl.engine.affinity_exactness import measure
from distmtl.engine.context import DistContext
from distmtl.engine.schedule import BASE_LR
from distmtl.models import MultiTaskModel
from distmtl.sharing.choose import EXHAUSTIVE_UP_TO, best_groupings, label_partitions, score, scores, to_labels

from conftest import REPO

TASKS = ["a", "b", "c"]


class Linear(MultiTaskModel):
    """ŷ_t = h_t · (W x): a shared linear map W and a linear head per task, no biases."""

    def __init__(self, features: int = 4, hidden: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.task_names = list(TASKS)
        self.trunk = nn.Linear(features, hidden, bias=False)
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, 1, bias=False) for t in TASKS})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(x)
        return {t: head(z).squeeze(1) for t, head in self.heads.items()}


@pytest.fixture
def float64():
    """Double precision throughout (the probe's reachability check builds its input at the default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _data(n: int = 10, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    targets = {"a": x[:, 0] - x[:, 1], "b": 2.0 * x[:, 2], "c": x[:, 0] - x[:, 1] + 0.1 * x[:, 3]}
    return x, targets


def _terms(outputs, targets):
    return {t: (((outputs[t] - targets[t]) ** 2).sum(), torch.tensor(len(targets[t]), dtype=torch.float64))
            for t in TASKS}


def _hand(model: Linear, x: torch.Tensor, targets, update) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z, Z net of the drift and the cosine by the formulas: ∂L_t/∂W = 2/N Σ (ŷ − y) h_tᵀ xᵀ, W' = W + update(g_t),
    the drift W + update(0)."""
    w = model.trunk.weight.detach().clone()
    heads = {t: model.heads[t].weight.detach()[0].clone() for t in TASKS}

    def loss(weights: torch.Tensor, task: str) -> torch.Tensor:
        return (((x @ weights.T) @ heads[task] - targets[task]) ** 2).mean()

    grads = {t: 2.0 / len(x) * torch.outer(heads[t], ((x @ w.T) @ heads[t] - targets[t]) @ x) for t in TASKS}
    z = np.array([[1.0 - float(loss(w + update(grads[i]), j) / loss(w, j)) for j in TASKS] for i in TASKS])
    drift = w + update(torch.zeros_like(w))
    net = np.array([[float((loss(drift, j) - loss(w + update(grads[i]), j)) / loss(w, j)) for j in TASKS]
                    for i in TASKS])
    flat = torch.stack([grads[t].flatten() for t in TASKS])
    cosine = (flat @ flat.T) / torch.outer(flat.norm(dim=1), flat.norm(dim=1))
    return z, net, cosine.numpy()


def _probe_matrices(model: Linear, optimizer, x, targets, lr_factor: float) -> torch.Tensor:
    probe = AffinityProbe(model, TASKS, every=1, image_shape=(4,), comm=DistContext(), seed=0)
    terms = _terms(model(x), targets)
    losses = {t: total / count for t, (total, count) in terms.items()}
    counts = {t: count for t, (_, count) in terms.items()}
    return probe.measure(0, losses, counts, x, lambda out: _terms(out, targets), optimizer, lr_factor)


def _warm(model: Linear, optimizer, x, targets, steps: int = 2) -> None:
    """A few real steps on all tasks, so the optimizer has state (moments, momentum buffers, a step count)."""
    for _ in range(steps):
        optimizer.zero_grad()
        sum(total / count for total, count in _terms(model(x), targets).values()).backward()
        optimizer.step()


def test_lookahead_with_sgd_equals_the_hand_computation(float64) -> None:
    model = Linear().double()
    x, targets = _data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    _warm(model, optimizer, x, targets)
    for group in optimizer.param_groups:
        group[BASE_LR] = group["lr"]
    buffer = optimizer.state[model.trunk.weight]["momentum_buffer"].clone()
    w = model.trunk.weight.detach().clone()
    rate = 0.1 * 0.5  # the schedule's factor 0.5 at this step

    z_hand, net_hand, cosine_hand = _hand(model, x, targets, lambda g: -rate * (0.9 * buffer + g + 0.01 * w))
    lookahead, net, cosine = _probe_matrices(model, optimizer, x, targets, lr_factor=0.5)
    np.testing.assert_allclose(lookahead.numpy(), z_hand, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(net.numpy(), net_hand, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cosine.numpy(), cosine_hand, rtol=1e-9, atol=1e-12)
    assert torch.equal(optimizer.state[model.trunk.weight]["momentum_buffer"], buffer)  # the real state is untouched
    assert torch.equal(model.trunk.weight.detach(), w)


def test_lookahead_with_adam_equals_the_hand_computation(float64) -> None:
    model = Linear().double()
    x, targets = _data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, betas=(0.8, 0.9), eps=1e-8)
    _warm(model, optimizer, x, targets, steps=3)
    for group in optimizer.param_groups:
        group[BASE_LR] = group["lr"]
    state = optimizer.state[model.trunk.weight]
    m, v, t = state["exp_avg"].clone(), state["exp_avg_sq"].clone(), float(state["step"]) + 1

    def adam(g: torch.Tensor) -> torch.Tensor:
        m1, v1 = 0.8 * m + 0.2 * g, 0.9 * v + 0.1 * g * g
        return -0.05 * (m1 / (1 - 0.8 ** t)) / ((v1 / (1 - 0.9 ** t)).sqrt() + 1e-8)

    z_hand, net_hand, cosine_hand = _hand(model, x, targets, adam)
    lookahead, net, cosine = _probe_matrices(model, optimizer, x, targets, lr_factor=1.0)
    np.testing.assert_allclose(lookahead.numpy(), z_hand, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(net.numpy(), net_hand, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(cosine.numpy(), cosine_hand, rtol=1e-9, atol=1e-12)
    assert float(state["step"]) == t - 1  # the real optimizer did not step


def test_lookahead_step_leaves_optimizer_and_parameters_as_they_were() -> None:
    model = Linear()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    x, targets = _data()
    _warm(model, optimizer, x.float(), {t: v.float() for t, v in targets.items()})
    params = [model.trunk.weight]
    before = (params[0].detach().clone(), {k: v.clone() for k, v in optimizer.state[params[0]].items()})
    delta = lookahead_step(optimizer, params, torch.ones(params[0].numel()), lr_factor=1.0)
    assert delta[0].abs().sum() > 0
    assert torch.equal(params[0].detach(), before[0])
    assert all(torch.equal(optimizer.state[params[0]][k], v) for k, v in before[1].items())


@pytest.mark.subprocess
def test_affinity_on_two_gloo_ranks_equals_one_process_on_the_union_batch() -> None:
    gap, same = measure(world_size=2)
    assert same, "the ranks measured different matrices"
    assert gap < 1e-5, f"rank 0 is {gap:.2e} from the union batch"


# --- choosing groupings -------------------------------------------------------------------------------------------

def test_every_partition_is_scored_once() -> None:
    for k, bell in ((1, 1), (3, 5), (5, 52), (7, 877)):
        labels = label_partitions(k)
        assert len(labels) == bell
        assert len({tuple(row) for row in labels.tolist()}) == bell


def test_a_grouping_scores_the_mean_affinity_each_task_receives_from_its_group() -> None:
    tasks = ["a", "b", "c", "d"]
    affinity = np.arange(16, dtype=float).reshape(4, 4) / 10  # row i → column j
    # {a, b, c} · {d}: a gets (b→a + c→a)/2, b gets (a→b + c→b)/2, c gets (a→c + b→c)/2, d alone gets 0
    expected = (0.4 + 0.8) / 2 + (0.1 + 0.9) / 2 + (0.2 + 0.6) / 2
    assert math.isclose(score(affinity, tasks, [["a", "b", "c"], ["d"]]), expected)
    assert score(affinity, tasks, [["a"], ["b"], ["c"], ["d"]]) == 0.0


def _planted(k: int, blocks: list[list[int]], seed: int) -> np.ndarray:
    """Affinity 0.5 ± noise within the planted blocks, −0.1 ± noise across them."""
    rng = np.random.default_rng(seed)
    affinity = rng.normal(-0.1, 0.05, (k, k))
    for block in blocks:
        affinity[np.ix_(block, block)] = rng.normal(0.5, 0.05, (len(block), len(block)))
    return affinity


def test_the_exhaustive_choice_recovers_a_planted_grouping() -> None:
    tasks = [f"t{i}" for i in range(6)]
    affinity = _planted(6, [[0, 3], [1, 2, 5], [4]], seed=0)
    best = best_groupings(affinity, tasks, [1, 2, 3])
    assert best[3][0] == [["t0", "t3"], ["t1", "t2", "t5"], ["t4"]]
    everything = scores(affinity, label_partitions(6))
    assert math.isclose(best[3][1], everything[label_partitions(6).max(axis=1) == 2].max())


def test_the_search_beyond_ten_tasks_recovers_a_planted_grouping() -> None:
    k = EXHAUSTIVE_UP_TO + 2
    tasks = [f"t{i}" for i in range(k)]
    blocks = [[0, 5, 7, 11], [1, 2, 3], [4, 6, 8, 9, 10]]
    best = best_groupings(_planted(k, blocks, seed=1), tasks, [3])
    assert sorted(map(sorted, best[3][0])) == sorted(sorted(tasks[i] for i in b) for b in blocks)
    assert to_labels(tasks, best[3][0]).max() == 2


class Copies(MultiTaskModel):
    """A shared tanh trunk and a head per task; ``x_copy`` has ``x``'s target and starts with ``x``'s head, so it is
    the same task."""

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.task_names = tasks
        self.trunk = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
        self.heads = nn.ModuleDict({t: nn.Linear(8, 1) for t in tasks})
        for task in tasks:
            if task.endswith("_copy"):
                self.heads[task].load_state_dict(self.heads[task.removesuffix("_copy")].state_dict())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(x)
        return {t: head(z).squeeze(1) for t, head in self.heads.items()}


@pytest.mark.parametrize("signal", [0, 1, 2])
def test_tasks_that_are_copies_are_grouped_apart_from_an_unrelated_pair(signal) -> None:
    tasks = ["a", "b", "a_copy", "b_copy"]
    model = Copies(tasks)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    probe = AffinityProbe(model, tasks, every=1, image_shape=(6,), comm=DistContext(), seed=0)
    generator = torch.Generator().manual_seed(2)
    total = torch.zeros(3, 4, 4, dtype=torch.float64)
    for step in range(30):
        x = torch.randn(32, 6, generator=generator)
        targets = {"a": torch.sin(2 * x[:, 0]) + x[:, 1], "b": x[:, 4] * x[:, 5] - x[:, 3]}
        targets.update(a_copy=targets["a"], b_copy=targets["b"])
        terms = {t: (((out - targets[t]) ** 2).sum(), torch.tensor(32.0)) for t, out in model(x).items()}
        losses = {t: total_ / count for t, (total_, count) in terms.items()}
        total += probe.measure(step, losses, {t: c for t, (_, c) in terms.items()}, x,
                               lambda out, tg=targets: {t: (((out[t] - tg[t]) ** 2).sum(), torch.tensor(32.0))
                                                        for t in tasks}, optimizer, 1.0)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    grouping, _ = best_groupings(total[signal].numpy(), tasks, [2])[2]
    assert sorted(map(sorted, grouping)) == [["a", "a_copy"], ["b", "b_copy"]]


# --- the command's checks before anything starts --------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--budget", "0"], "--budget 0: 5 tasks make 1 … 5 branches"),
    (["--budget", "6"], "--budget 6: 5 tasks make 1 … 5 branches"),
    (["--budget", "half"], "--budget 'half' is neither"),
    (["--budget", "0x"], "--budget '0x' is neither"),
    (["--budget", "0.1x"], "--budget 0.1x: even one branch holds 29,806 parameters"),
    (["--every", "0"], "--every 0"),
    (["--epochs", "0"], "--epochs 0"),
    (["--set", "optim.lrr=1"], "unknown key 'optim.lrr'"),
    (["--set", "tasks=[fine]"], "give at least two"),
])
def test_bad_budgets_and_configs_are_one_line_errors_before_ray_starts(args, message, capsys, monkeypatch):
    import distmtl.launch.run as run
    from distmtl.cli import main

    monkeypatch.setattr(run, "train_on_ray", lambda *a, **k: pytest.fail("training started"))
    config = str(REPO / "search_spaces/configs/selective_synthetic.yaml")
    assert main(["affinity", "--config", config, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


# --- in the engine -----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_measuring_affinity_leaves_training_as_it_was(tmp_path) -> None:
    """Same weights bit for bit with and without the probe (it touches no parameter, buffer, optimizer state or
    random stream); the run reports the matrices, the overhead and stores the heat-map record every epoch."""
    from distmtl.engine import LocalReporter, Trainer

    from conftest import small_config

    states = {}
    for every in (0, 2):
        config = small_config(**{"train.affinity_every": every, "model.dropout": 0.2, "data.noise_level": 0.05})
        reporter = LocalReporter(tmp_path / str(every))
        trainer = Trainer(config, reporter)
        trainer.fit()
        states[every] = trainer.model.state_dict()
        if every:
            last = reporter.history[-1]
            assert last["affinity/measurements"] > 0 and last["affinity/overhead"] > 0
            assert {f"affinity/{s}/fine/colour" for s in ("lookahead", "lookahead_net", "cosine")} <= set(last)
            record = reporter.checkpoints[-1] / "artifacts" / "task_affinity_epoch001.json"
            assert record.is_file() and (record.with_suffix(".png")).is_file()
    assert states[0].keys() == states[2].keys()
    assert all(torch.equal(states[0][k], states[2][k]) for k in states[0])


@pytest.mark.slow
def test_selective_sharing_merges_on_affinity_and_records_each_merge() -> None:
    """Under criterion affinity the decision reads the probe's matrices (measured only while grouping) and every merge
    leaves a record of the merged tasks' losses before and after it."""
    from distmtl.engine import LocalReporter, Trainer

    from conftest import small_config

    config = small_config(**{"tasks": ["fine", "coarse", "shape", "colour", "texture"],
                             "model.architecture": "selective_sharing", "data.num_samples": 400, "optim.epochs": 4,
                             "model.selective": {"criterion": "affinity", "start_epoch": 1, "window": 1,
                                                 "patience": 1, "epsilon": 0.5, "merge": "highest_loss"}})
    reporter = LocalReporter()
    trainer = Trainer(config, reporter)
    trainer.fit()
    measured = [h["affinity/measurements"] for h in reporter.history]
    assert measured[0] == 0 and measured[1] > 0  # the warm-up epoch measures nothing
    locked = [h["selective/locked"] for h in reporter.history]
    assert 1.0 in locked and measured[locked.index(1.0) + 1:] == [0.0] * len(measured[locked.index(1.0) + 1:])
    merged_at = [e for e, h in enumerate(reporter.history) if h["selective/branches"] < (
        reporter.history[e - 1]["selective/branches"] if e else 5)]
    records = trainer.controller.effects.records
    assert sorted({r["epoch"] for r in records}) == [e for e in merged_at if e < len(reporter.history) - 1] != []
    for record in records:
        assert record["rule"] == "highest_loss"
        assert set(record["before"]) == set(record["after"]) == set(record["first"]) == set(record["tasks"])
        assert record["after_steps"] > 0 and all(v > 0 for v in record["before"].values())


def test_the_branches_run_is_every_task_on_its_own_branch_with_the_configs_branch_shape() -> None:
    from distmtl.config import load_yaml
    from distmtl.launch.affinity import plan

    config = plan(load_yaml(REPO / "search_spaces/configs/selective_synthetic.yaml"), ["2"], None, 5, "x",
                  "branches").config
    assert config.model.architecture == "selective_sharing" and config.train.affinity_every == 5
    assert config.model.selective.groups == [[t] for t in config.tasks]
    assert (config.model.selective.shared_stages, config.model.selective.branch_layers) == (0, 0)  # the config's own
    assert config.optim.epochs == 4  # a third of the config's 12


def test_a_parameter_budget_chooses_among_groupings_whose_built_model_fits() -> None:
    from distmtl.config import load_yaml
    from distmtl.launch.affinity import choose, plan

    found = plan(load_yaml(REPO / "search_spaces/configs/selective_synthetic.yaml"), ["3", "0.5x", "0.65x"], None,
                 5, "x")
    assert found.counts[0] == 141230 and found.counts[2] == 57662  # independent networks; two branches (README)
    assert found.limits == {"3": 3, "0.5x": 2, "0.65x": 3}
    tasks = found.config.tasks  # fine, coarse, shape, colour, texture
    affinity = _planted(5, [[0, 1], [2], [3, 4]], seed=3)  # three groups would be best
    chosen = choose(found, affinity)
    assert chosen["3"]["groups"] == [["fine", "coarse"], ["shape"], ["colour", "texture"]]
    assert chosen["0.65x"]["groups"] == chosen["3"]["groups"] and chosen["0.65x"]["parameters"] == 85518
    assert len(chosen["0.5x"]["groups"]) == 2 and chosen["0.5x"]["parameters"] == 57662 <= 0.5 * 141230
    labels = label_partitions(5)
    within = scores(affinity, labels)[labels.max(axis=1) < 2]  # every grouping into one or two branches
    assert math.isclose(chosen["0.5x"]["score"], within.max())
    assert math.isclose(score(affinity, tasks, chosen["0.5x"]["groups"]), within.max())
