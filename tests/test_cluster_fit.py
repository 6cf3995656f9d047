"""Fitting Train workers and concurrent trials to a cluster's resources (no cluster needed: resources given)."""

import pytest

from distmtl.launch.cluster import TRIAL_CPUS, cpus_per_worker, trials_that_fit


@pytest.mark.parametrize("cpus, workers, reserve, expected", [
    (2, 2, TRIAL_CPUS, 0.75),  # a sweep trial on this 2-core machine: 0.5 + 2 × 0.75 = 2
    (2, 2, 0.0, 1.0),
    (2, 3, TRIAL_CPUS, 0.5),
    (3, 2, 0.0, 1.0),  # capped at one CPU per worker
    (64, 4, TRIAL_CPUS, 1.0),
    (1, 8, 0.0, 0.25),  # never below a quarter, even when that does not fit
])
def test_workers_ask_for_the_largest_quarter_cpu_that_fits(cpus, workers, reserve, expected):
    fitted = cpus_per_worker(None, workers, reserve, resources={"CPU": float(cpus)})
    assert fitted == expected
    if 0.25 < fitted < 1.0:  # it fits, and a quarter more would not
        assert workers * fitted + reserve <= cpus < workers * (fitted + 0.25) + reserve


def test_a_requested_cpu_count_is_kept():
    assert cpus_per_worker(3.0, 2, TRIAL_CPUS, resources={"CPU": 2.0}) == 3.0


@pytest.mark.parametrize("resources, workers, cpus, gpus, expected", [
    ({"CPU": 2.0}, 2, 0.75, 0.0, 1),  # 0.5 + 2 × 0.75 = 2 CPUs per trial
    ({"CPU": 2.0}, 1, 0.25, 0.0, 2),
    ({"CPU": 16.0}, 2, 1.0, 0.0, 6),  # 16 // 2.5
    ({"CPU": 64.0, "GPU": 4.0}, 2, 1.0, 1.0, 2),  # GPUs bound it
    ({"CPU": 64.0, "GPU": 8.0}, 2, 1.0, 0.5, 8),  # fractional GPUs: two workers share one
    ({"CPU": 1.0}, 2, 1.0, 0.0, 1),  # at least one trial
    ({"CPU": 8.0}, 1, 1.0, 1.0, 1),  # GPUs asked, none there: one trial, not zero
])
def test_trials_that_fit_count_the_trial_share_and_its_workers(resources, workers, cpus, gpus, expected):
    assert trials_that_fit(workers, cpus, gpus, resources=resources) == expected
