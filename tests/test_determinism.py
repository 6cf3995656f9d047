"""The same config and seed on one worker gives identical metrics, whatever the process's RNGs did before."""

import random

import numpy as np
import torch

from distmtl.engine import LocalReporter, train
from distmtl.engine.trainer import TIMINGS

from conftest import small_config

#: Every random choice the engine makes: dropout, noise, augmentation, masked targets, DWA over epochs.
RANDOM_PARTS = {"optim.epochs": 3, "weighting.method": "dwa", "model.dropout": 0.3, "data.noise_level": 0.1,
                "data.augment.hflip": 0.5, "data.augment.rotation": 10, "data.target_fraction.shape": 0.5}


def _history(**overrides):
    reporter = LocalReporter()
    train(small_config(**{**RANDOM_PARTS, **overrides}), reporter)
    return [{k: v for k, v in report.items() if k not in TIMINGS and not k.startswith("startup/")}
            for report in reporter.history]


def test_same_config_and_seed_give_identical_metrics_twice_and_another_seed_does_not():
    first = _history()
    random.random(), np.random.rand(), torch.rand(3)  # the second run starts from other global RNG states
    second = _history()
    assert len(first) == 3 and "test/fine/accuracy" in first[-1]
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        assert all(a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])) for k in a), a["epoch"]
    assert _history(**{"train.seed": 1})[-1]["train/loss"] != first[-1]["train/loss"]  # the seed is what matters
