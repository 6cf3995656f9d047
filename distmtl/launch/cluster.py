"""Joining or starting a Ray cluster, and fitting worker CPU requests to it."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("distmtl")

#: CPU reserved for a Tune trial's own driver function (the Train workers get the rest).
TRIAL_CPUS = 0.5


def ensure_ray(address: str | None = None) -> bool:
    """Connect to ``address``; without one, join a running cluster if there is one, else start a local one.

    Returns whether the cluster is a fixed-size local one (started here or in this process), as
    opposed to a cluster that an autoscaler may grow.
    """
    import ray

    if ray.is_initialized():
        return True
    if address:
        ray.init(address=address)
        return False
    try:
        ray.init(address="auto")
        log.info("joined the running Ray cluster")
        return False
    except ConnectionError:
        ray.init()
        log.info("started a local Ray cluster with %s CPUs", ray.cluster_resources().get("CPU"))
        return True


def cpus_per_worker(requested: float | None, workers: int, reserve: float = 0.0,
                    resources: Mapping[str, float] | None = None) -> float:
    """The CPUs each Train worker asks for: ``requested`` if given, else 1, shrunk (to quarters) so that
    ``workers`` of them plus ``reserve`` fit the cluster — Ray leaves whole-CPU requests PENDING on a
    laptop with fewer cores than workers. ``resources`` defaults to ``ray.cluster_resources()``."""
    if requested is not None:
        return requested
    total = _resources(resources).get("CPU", 1.0)
    fitted = math.floor(4 * (total - reserve) / workers) / 4
    return max(0.25, min(1.0, fitted))


def resolve_storage(path: str) -> str:
    """Local paths become absolute (workers run in other directories); URIs such as s3:// stay as given."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def trials_that_fit(workers: int, cpus: float, gpus: float, resources: Mapping[str, float] | None = None) -> int:
    """How many trials (their own CPU share plus their workers) the cluster holds at once, at least 1.

    Starting more on a fixed-size cluster deadlocks: each trial holds its share while its
    workers wait for CPUs that the other trials hold. ``resources`` defaults to ``ray.cluster_resources()``.
    """
    resources = _resources(resources)
    fit = int(resources.get("CPU", 1.0) // (TRIAL_CPUS + workers * cpus))
    if gpus > 0:
        fit = min(fit, int(resources.get("GPU", 0.0) // (workers * gpus)))
    return max(1, fit)


def _resources(given: Mapping[str, float] | None) -> Mapping[str, float]:
    """``given``, else the connected cluster's total resources."""
    if given is not None:
        return given
    import ray

    return ray.cluster_resources()
