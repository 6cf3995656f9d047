"""The divergence guard in-process: the first non-finite loss stops training with its epoch and step, on
every DDP rank alike, before a checkpoint of NaN weights is written."""

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distmtl.engine import DistContext, LocalReporter, train
from distmtl.engine.divergence import DivergenceGuard, TrainingDiverged

from conftest import free_port, small_config

CPU = DistContext(0, 1, torch.device("cpu"))


def test_stops_at_the_first_non_finite_loss_with_epoch_and_step():
    guard = DivergenceGuard(CPU)
    assert guard.check_every == 1  # on the CPU a check costs no device sync
    guard.start_epoch(4)
    for loss in (2.0, 1.5, 1.2):
        guard.observe(torch.tensor(loss))
    with pytest.raises(TrainingDiverged, match=r"^diverged at epoch 4, step 3: loss nan$") as caught:
        guard.observe(torch.tensor(math.nan))
    assert (caught.value.epoch, caught.value.step, caught.value.value) == (4, 3, "nan")


def test_between_checks_it_remembers_the_first_bad_step_and_its_kind():
    guard = DivergenceGuard(CPU, check_every=4)
    guard.start_epoch(0)
    for loss in (1.0, math.inf, math.nan):  # steps 0-2: no check is due yet
        guard.observe(torch.tensor(loss))
    with pytest.raises(TrainingDiverged, match=r"step 1: loss inf$"):
        guard.observe(torch.tensor(1.0))  # step 3: the check
    minus = DivergenceGuard(CPU, check_every=8)
    minus.start_epoch(2)
    minus.observe(torch.tensor(-math.inf))
    with pytest.raises(TrainingDiverged, match=r"^diverged at epoch 2, step 0: loss -inf$"):
        minus.check()  # the end-of-epoch check


def test_a_new_epoch_counts_steps_from_zero_and_finite_losses_pass():
    guard = DivergenceGuard(CPU, check_every=2)
    for epoch in range(3):
        guard.start_epoch(epoch)
        for _ in range(5):
            guard.observe(torch.tensor(0.5))
        guard.check()
    guard.check_value("validation", 0.3)
    with pytest.raises(TrainingDiverged, match=r"^diverged at epoch 2, validation: loss nan$"):
        guard.check_value("validation", math.nan)


def test_training_with_an_absurd_learning_rate_stops_in_its_first_epoch_without_a_checkpoint(tmp_path):
    reporter = LocalReporter(tmp_path)
    with pytest.raises(TrainingDiverged, match=r"^diverged at epoch 0, step \d+: loss (nan|inf)$"):
        train(small_config(**{"optim.lr": 1e6, "optim.epochs": 3}), reporter)
    assert reporter.history == [] and reporter.checkpoints == []


def _rank(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    guard = DivergenceGuard(DistContext(rank, 2, torch.device("cpu")), check_every=3)
    guard.start_epoch(1)
    try:
        for step in range(6):  # only rank 1 sees a bad loss, at step 2
            guard.observe(torch.tensor(math.inf if (rank, step) == (1, 2) else 1.0))
        results[rank] = "no divergence"
    except TrainingDiverged as exc:
        results[rank] = (str(exc), guard._step)
    dist.destroy_process_group()


@pytest.mark.subprocess
def test_ranks_agree_to_stop_at_the_same_step_when_only_one_diverges():
    """A rank that stopped alone would leave the others waiting in DDP's next all-reduce."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_rank, args=(free_port(), results), nprocs=2, join=True, start_method="fork")
        assert results[0] == results[1] == ("diverged at epoch 1, step 2: loss inf", 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_observing_losses_on_a_gpu_never_waits_for_the_device():
    guard = DivergenceGuard(DistContext(0, 1, torch.device("cuda", 0)))
    assert guard.check_every > 1
    guard.start_epoch(0)
    losses = [torch.tensor(v, device="cuda") for v in (1.0, math.nan)]
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation raises
    try:
        for step in range(guard.check_every - 1):
            guard.observe(losses[step == 5])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with pytest.raises(TrainingDiverged, match=r"step 5: loss nan$"):
        guard.observe(losses[0])  # the due check: one sync
