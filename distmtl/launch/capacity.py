"""What a Ray cluster can ever hold, as pure arithmetic over a description of its nodes (no Ray here).

A request that no node, or no set of nodes, could ever satisfy is refused with one line before
anything starts; otherwise :func:`plan` picks the CPUs per Train worker, where each trial's own
driver runs, and how many trials fit at once. Running more trials than that deadlocks a sweep:
every trial holds its driver's CPU share while its workers wait for CPUs the other trials hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from distmtl.errors import DistmtlError

#: CPU reserved for a Tune trial's own driver function (the Train workers get the rest).
TRIAL_CPUS = 0.5
#: Ray's resource that only the head node has; a tiny request of it pins an actor to the head.
HEAD_RESOURCE = "node:__internal_head__"
#: CPUs per worker tried, largest first, when the user gives none (Ray's logical CPUs may be fractions).
CPU_STEPS = (1.0, 0.75, 0.5, 0.25)
#: Stands in for an autoscaler node type without an upper bound on its node count.
UNBOUNDED = 10_000
_EPS = 1e-9


@dataclass(frozen=True)
class NodeGroup:
    """``count`` identical nodes: a running node (count 1), or a node type the autoscaler may still launch
    ``count`` more of."""

    name: str
    cpus: float
    gpus: float = 0.0
    count: int = 1
    head: bool = False
    autoscaled: bool = False

    def describe(self) -> str:
        size = f"{self.cpus:g} CPU" + (f", {self.gpus:g} GPU" if self.gpus else "")
        if self.autoscaled:
            more = f" (autoscaler: up to {self.count} more)"
        else:
            more = "" if self.count == 1 else f" × {self.count}"
        return f"{self.name}{more}: {size}"


@dataclass(frozen=True)
class Request:
    """What each run asks for: ``workers`` Train workers of ``gpus_per_worker`` GPUs and ``cpus_per_worker``
    CPUs (None: the largest of :data:`CPU_STEPS` that fits), plus ``driver_cpus`` for each Tune trial's own
    function (0 for ``distmtl train``: Train's controller takes no CPU). The flags name the options to
    change in error messages."""

    workers: int
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None
    driver_cpus: float = 0.0
    workers_flag: str = "--workers"


@dataclass(frozen=True)
class Plan:
    """How runs lay out: CPUs per worker, how many runs fit at once, and whether trial drivers are
    pinned to the head node (so that they never take CPUs that workers need on other nodes)."""

    cpus_per_worker: float
    max_concurrent: int
    driver_on_head: bool = False

    def driver_resources(self, driver_cpus: float) -> dict[str, float]:
        """The resource request of one trial's driver, for ``tune.with_resources``."""
        return {"cpu": driver_cpus, **({HEAD_RESOURCE: 0.001} if self.driver_on_head else {})}


def worker_slots(group: NodeGroup, cpus: float, gpus: float, reserved_cpus: float = 0.0) -> int:
    """How many workers of ``cpus`` CPUs and ``gpus`` GPUs one node of ``group`` holds after
    ``reserved_cpus`` are taken (a worker never spans nodes)."""
    slots = math.floor((group.cpus - reserved_cpus) / cpus + _EPS)
    if gpus > 0:
        slots = min(slots, math.floor(group.gpus / gpus + _EPS))
    return max(0, slots)


def concurrent_runs(groups: Sequence[NodeGroup], request: Request, cpus: float, on_head: bool) -> int:
    """The most runs whose drivers and workers fit at once, whatever nodes Ray puts the drivers on.

    With drivers pinned to the head, the head loses exactly the slots its drivers' CPUs take. Unpinned,
    a driver of d CPUs costs at most ⌈d / cpus⌉ worker slots on whichever node it lands, so that many
    are subtracted per run: a safe bound for any placement.
    """
    gpus, need, d = request.gpus_per_worker, request.workers, request.driver_cpus
    total = sum(worker_slots(g, cpus, gpus) * g.count for g in groups)
    if d <= 0:
        return total // need
    if on_head:
        head = next(g for g in groups if g.head)
        k = 0
        while (k + 1) * d <= head.cpus + _EPS:
            left = total - worker_slots(head, cpus, gpus) + worker_slots(head, cpus, gpus, (k + 1) * d)
            if left < (k + 1) * need:
                break
            k += 1
        return k
    cost = math.ceil(d / cpus - _EPS)
    room = sum(g.cpus * g.count for g in groups)
    return min(total // (need + cost), math.floor(room / d + _EPS))


def plan(groups: Sequence[NodeGroup], request: Request) -> Plan:
    """Check ``request`` against the nodes the cluster has or may launch and lay it out.

    Raises :class:`DistmtlError` (one line naming the request, the cluster and the fix) when no
    placement could ever satisfy it: GPUs where no node has any, more GPUs or CPUs per worker than
    any node has, or more workers than all nodes together hold.
    """
    gpus, cpus = request.gpus_per_worker, request.cpus_per_worker
    nodes = "; ".join(g.describe() for g in groups)
    if gpus > 0 and not any(g.gpus > 0 for g in groups):
        anywhere = " and no node type its autoscaler may launch has any" if any(g.autoscaled for g in groups) else ""
        raise DistmtlError(f"--gpus-per-worker {gpus:g}: the Ray cluster has no GPUs{anywhere} (nodes: {nodes}); "
                           "use --gpus-per-worker 0 or a cluster with GPU nodes")
    largest_gpus = max(g.gpus for g in groups)
    if gpus > largest_gpus + _EPS:
        raise DistmtlError(f"--gpus-per-worker {gpus:g}: no node has that many GPUs (the largest has {largest_gpus:g}; "
                           f"nodes: {nodes}); a worker runs on one node, so ask for at most {largest_gpus:g}")
    hosts = [g for g in groups if g.gpus + _EPS >= gpus] if gpus > 0 else list(groups)
    largest_cpus = max(g.cpus for g in hosts)
    if cpus is not None and cpus > largest_cpus + _EPS:
        where = " with enough GPUs" if gpus > 0 else ""
        raise DistmtlError(f"--cpus-per-worker {cpus:g}: no node{where} has that many CPUs (the largest has "
                           f"{largest_cpus:g}; nodes: {nodes}); ask for at most {largest_cpus:g}")
    best: Plan | None = None
    for step in (cpus,) if cpus is not None else CPU_STEPS:
        for on_head in _driver_placements(groups, request):
            k = concurrent_runs(groups, request, step, on_head)
            if k >= 1 and (best is None or k > best.max_concurrent):
                best = Plan(step, k, on_head)
        if best:
            return best
    step = cpus if cpus is not None else CPU_STEPS[-1]
    size = [f"{step:g} CPU"] if cpus is not None or not gpus else []
    size += [f"{gpus:g} GPU"] if gpus else []
    most = _most_workers(groups, request, step)
    driver = f" plus {request.driver_cpus:g} CPU for the trial itself" if request.driver_cpus else ""
    raise DistmtlError(
        f"{request.workers_flag} {request.workers}: {request.workers} workers of {' and '.join(size)}{driver} never "
        f"fit this Ray cluster, which holds at most {most} such worker(s) for one run (nodes: {nodes}); ask for at "
        f"most {most} workers" + (" or fewer CPUs per worker" if cpus is not None and not gpus else "")
    )


def _most_workers(groups: Sequence[NodeGroup], request: Request, cpus: float) -> int:
    """The most workers of ``cpus`` CPUs one run could have (for the message that refuses more)."""
    total = sum(worker_slots(g, cpus, request.gpus_per_worker) * g.count for g in groups)
    fits = [w for w in range(1, min(total, request.workers) + 1) for on_head in _driver_placements(groups, request)
            if concurrent_runs(groups, Request(w, request.gpus_per_worker, cpus, request.driver_cpus), cpus, on_head)]
    return max(fits, default=0)


def _driver_placements(groups: Sequence[NodeGroup], request: Request) -> Iterable[bool]:
    """Pinning drivers to the head is tried first (it keeps them off the workers' nodes) where the head has
    CPUs for a driver; unpinned always."""
    if request.driver_cpus > 0 and any(g.head and g.cpus + _EPS >= request.driver_cpus for g in groups):
        yield True
    yield False


def concurrency(fit: int, requested: int | None, num_samples: int, tpe: bool) -> tuple[int, str]:
    """Trials to run at once and why: at most what fits (more would deadlock), the user's number if lower,
    and for TPE at most a quarter of the trials, so that at least three quarters of its proposals are made
    with results in hand (proposals made before any result are random search)."""
    limits = {"what the cluster holds at once": fit}
    if requested is not None:
        limits["--max-concurrent"] = requested
    if tpe:
        limits["a quarter of the trials (TPE learns from finished trials)"] = max(1, num_samples // 4)
    reason = min(limits, key=limits.get)
    return limits[reason], reason


def launcher_node_types(config: dict[str, Any]) -> list[NodeGroup]:
    """The worker node types of a Ray cluster-launcher config (``available_node_types``, as the launcher
    writes it to ``~/ray_bootstrap_config.yaml`` on the head with resources filled in), each with the most
    nodes the autoscaler may launch of it; types whose resources are not given are skipped."""
    cap = int(config.get("max_workers", UNBOUNDED))
    groups = []
    for name, node_type in config.get("available_node_types", {}).items():
        resources = node_type.get("resources") or {}
        if name == config.get("head_node_type") or not resources:
            continue
        count = min(int(node_type.get("max_workers", cap)), cap)
        groups.append(NodeGroup(name, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), count,
                                autoscaled=True))
    return groups
