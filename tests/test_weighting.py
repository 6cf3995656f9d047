import math

import pytest
import torch
import torch.multiprocessing as mp

from distmtl.config.schema import WEIGHTING
from distmtl.engine import LocalReporter
from distmtl.weighting import build_weighting
from test_engine import _free_port

from conftest import small_config


def test_fixed_weights_are_the_static_lambdas():
    w = build_weighting(WEIGHTING.of(method="fixed", weights={"shape": 0.25}), ["fine", "shape"])
    w.end_epoch({"fine": 2.0, "shape": 1.0})
    assert w.weights() == {"fine": 1.0, "shape": 0.25}


def test_dwa_worked_example():
    """Two tasks, T = 2: losses (1.0, 2.0) then (0.5, 1.8) give r = (0.5, 0.9) and
    w = 2·exp(r/2)/Σexp(r/2) = (0.9003, 1.0997)."""
    w = build_weighting(WEIGHTING.of(method="dwa", temperature=2.0), ["a", "b"])
    assert w.weights() == {"a": 1.0, "b": 1.0}
    w.end_epoch({"a": 1.0, "b": 2.0})
    assert w.weights() == {"a": 1.0, "b": 1.0}
    w.end_epoch({"a": 0.5, "b": 1.8})
    ea, eb = math.exp(0.25), math.exp(0.45)
    expected = {"a": 2 * ea / (ea + eb), "b": 2 * eb / (ea + eb)}
    assert w.weights() == pytest.approx(expected)
    assert w.weights()["a"] == pytest.approx(0.9003, abs=1e-4)
    assert sum(w.weights().values()) == pytest.approx(2.0)


def test_dwa_uses_only_the_last_two_epochs_and_multiplies_static_weights():
    w = build_weighting(WEIGHTING.of(method="dwa", temperature=1.0, weights={"b": 0.5}), ["a", "b"])
    for losses in ({"a": 9.0, "b": 9.0}, {"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 2.0}):
        w.end_epoch(losses)
    ea, eb = math.exp(1.0), math.exp(2.0)
    assert w.weights() == pytest.approx({"a": 2 * ea / (ea + eb), "b": 0.5 * 2 * eb / (ea + eb)})


def test_high_temperature_tends_to_equal_weights():
    w = build_weighting(WEIGHTING.of(method="dwa", temperature=1e6), ["a", "b", "c"])
    w.end_epoch({"a": 1.0, "b": 1.0, "c": 1.0})
    w.end_epoch({"a": 0.1, "b": 1.0, "c": 3.0})
    assert w.weights() == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0}, rel=1e-5)


def test_dwa_state_round_trips():
    cfg = WEIGHTING.of(method="dwa")
    w = build_weighting(cfg, ["a", "b"])
    w.end_epoch({"a": 1.0, "b": 2.0})
    w.end_epoch({"a": 0.7, "b": 1.0})
    restored = build_weighting(cfg, ["a", "b"])
    restored.load_state_dict(w.state_dict())
    assert restored.weights() == w.weights()


def test_a_learned_weighting_is_a_module_that_moves_and_checkpoints_with_the_model():
    w = build_weighting(WEIGHTING.of(method="uncertainty"), ["a", "b"])
    assert [name for name, _ in w.named_parameters()] == ["log_vars"]
    w.to(torch.float64)  # stands in for .to(device): the parameter follows the module
    assert w.log_vars.dtype == torch.float64 and set(w.state_dict()) == {"log_vars"}


def _uncertainty_worker(rank: int, port: int, config_dict: dict, results) -> None:
    import os

    import torch.distributed as dist

    from distmtl.config import config_from_dict
    from distmtl.engine import DistContext, Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    trainer = Trainer(config_from_dict(config_dict), LocalReporter(), DistContext.current(torch.device("cpu")))
    trainer.fit()
    results[rank] = trainer.weighting.log_vars.detach().tolist()
    dist.destroy_process_group()


@pytest.mark.subprocess
def test_uncertainty_weighting_trains_under_two_process_ddp():
    """The learned log-variances get averaged gradients on every rank, so both ranks end with the same,
    moved values (a CPU tensor in a collective of another device would fail under NCCL)."""
    config = small_config(**{"weighting.method": "uncertainty", "optim.lr": 0.05})
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_uncertainty_worker, args=(_free_port(), config.model_dump(), results), nprocs=2)
        first, second = results[0], results[1]
    assert first == pytest.approx(second, abs=1e-7)
    assert all(abs(v) > 1e-3 for v in first)  # every task's log-variance moved away from its start, 0
