"""Shared fixtures: small configs for in-process tests and one real local Ray cluster for the integration tests."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from distmtl.config import Config, apply_overrides, config_from_dict
from distmtl.engine import LocalReporter, train

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


class Interrupted(Exception):
    """Raised by :class:`InterruptingReporter` in place of a killed process."""


class InterruptingReporter(LocalReporter):
    """A :class:`LocalReporter` that stops the run (raises :class:`Interrupted`) once ``epochs`` reports
    are in, as if the process died right after that epoch's checkpoint was written."""

    def __init__(self, output_dir: Path, epochs: int) -> None:
        super().__init__(output_dir)
        self.epochs = epochs

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        super().report(metrics, checkpoint_dir)
        if len(self.history) == self.epochs:
            raise Interrupted


def interrupted_run(config: Config, output_dir: Path, epochs: int) -> InterruptingReporter:
    """Train ``config`` until ``epochs`` epochs are checkpointed, then stop; the reporter holds the checkpoints."""
    reporter = InterruptingReporter(output_dir, epochs)
    with pytest.raises(Interrupted):
        train(config, reporter)
    return reporter


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Fixtures that start a Ray cluster: a test that uses one must be marked ``ray`` (the fast tier deselects it).
RAY_FIXTURES = {"ray_cluster", "two_nodes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run a test that uses a Ray fixture without the ``ray`` marker: plain ``pytest`` would run it."""
    unmarked = [item.nodeid for item in items
                if RAY_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("ray") is None]
    if unmarked:
        raise pytest.UsageError(f"tests that start Ray must be marked @pytest.mark.ray: {', '.join(unmarked)}")


@pytest.fixture(autouse=True)
def ray_only_where_marked(request: pytest.FixtureRequest):
    """Fail a test that is not marked ``ray`` but leaves a Ray driver connected that it did not find (a CLI command
    run in-process that started a local cluster): it belongs to the slow tier."""
    ray = sys.modules.get("ray")
    connected = ray is not None and ray.is_initialized()
    yield
    ray = sys.modules.get("ray")
    if request.node.get_closest_marker("ray") is None and not connected and ray is not None and ray.is_initialized():
        pytest.fail(f"{request.node.nodeid} started Ray without @pytest.mark.ray", pytrace=False)


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster (2 logical CPUs), started for each test module that uses it.

    One cluster per module, not per session: a pytest process that has driven many Ray Train runs can stop
    hearing from the cluster about new actors (observed in Ray 2.60: a trial actor the GCS reports created
    stays "dependencies unready" for its owner, and Tune waits for it forever), so no module inherits
    another's driver state.

    Its processes (and drivers that tests start against it) inherit ``RAY_API_SERVER_ADDRESS``, the
    address of its own dashboard: Ray Train's placement-group cleaner otherwise looks the cluster up
    as "auto", which fails while another Ray cluster runs on the machine, and the next trial of a
    sequential sweep then waits forever for the CPUs of the last one's leaked placement group.
    """
    ray = pytest.importorskip("ray")
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{port}")
        if ray.is_initialized():  # a CLI test of another module started its own local cluster in-process
            ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=True, dashboard_port=port)
        yield ray
        ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def no_ray_driver_left_at_exit():
    """Disconnect from any Ray cluster a CLI test started in-process while the session still runs, so that no Ray
    driver is left for interpreter exit (one run of the suite passed every test and then died with a segmentation
    fault during exit; a connected driver is the main native component still running then)."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
