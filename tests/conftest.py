"""Shared fixtures: small configs for in-process tests and one real local Ray cluster for the integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distmtl.config import Config, apply_overrides, config_from_dict

REPO = Path(__file__).resolve().parents[1]


def small_config(**overrides: Any) -> Config:
    """A config that trains in about a second: 240 images of 16×16, two conv blocks, two epochs."""
    base = {
        "tasks": ["fine", "colour", "shape"],
        "data": {"num_samples": 240, "image_size": 16, "batch_size": 32},
        "model": {"channels": [8, 16], "bottleneck": 16},
        "optim": {"epochs": 2, "lr": 0.01},
        "train": {"device": "cpu"},
    }
    return config_from_dict(apply_overrides(base, overrides))


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (2 logical CPUs), started once for all integration tests."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=True)
    yield ray
    ray.shutdown()
