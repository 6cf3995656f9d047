"""Joining or starting a Ray cluster, once it is clear that the cluster can hold what the runs ask for."""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from distmtl.errors import DistmtlError
from distmtl.launch import ray_internals
from distmtl.launch.capacity import HEAD_RESOURCE, UNBOUNDED, NodeGroup, Plan, Request, launcher_node_types, plan

log = logging.getLogger("distmtl")

#: Where the Ray cluster launcher leaves its config (with node types and their resources) on the head node.
LAUNCHER_CONFIG = Path("~/ray_bootstrap_config.yaml")
#: The label Ray gives a node that the autoscaler launched: its node type.
NODE_TYPE_LABEL = "ray.io/node-group"


def ensure_ray(request: Request, address: str | None = None, verbose: bool = True) -> Plan:
    """Join the Ray cluster at ``address`` (else ``$RAY_ADDRESS``, else the one ``ray start`` recorded on
    this machine) or start a local one, and lay ``request`` out on it; ``verbose``: whether the workers'
    output and Ray's own notices (token authentication, dashboard) reach this console.

    A request that the cluster can never hold raises :class:`DistmtlError` before a local cluster
    starts (judged from this machine's CPUs and GPUs), or right after joining (and disconnecting), so
    that it fails in seconds instead of waiting for workers forever.
    """
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return plan(reachable_nodes(), request)
    target, origin = _cluster_to_join(address)
    if target is None:
        plan(local_machine(), request)
        _start_local(verbose)
        log.info("started a local Ray cluster with %s CPUs", ray.cluster_resources().get("CPU"))
    else:
        _check_listening(target, origin)
        try:
            ray.init(address=address, **_console(verbose))
        except (ConnectionError, AuthenticationError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DistmtlError(f"cannot join the Ray cluster at {target} ({origin}): {reason}; with token "
                               "authentication, set RAY_AUTH_MODE=token and give the cluster's token") from None
        log.info("joined the Ray cluster at %s", target)
    try:
        return plan(reachable_nodes(), request)
    except DistmtlError:
        ray.shutdown()
        raise


def _start_local(verbose: bool) -> None:
    """Start a local cluster whose processes find its dashboard through ``RAY_API_SERVER_ADDRESS``: Ray Train's
    placement-group cleaner otherwise looks the cluster up as "auto", which fails while another Ray cluster runs
    on the machine, and a sequential sweep's next trial then waits forever for the last one's placement group."""
    import ray

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"  # the cluster's processes inherit it
    ray.init(address="local", dashboard_port=port, **_console(verbose))


def _console(verbose: bool) -> dict:
    """``ray.init`` settings for what reaches this console: everything, or warnings only and no worker lines."""
    return {} if verbose else {"log_to_driver": False, "logging_level": logging.ERROR}


def _cluster_to_join(address: str | None) -> tuple[str | None, str]:
    """The address to join and where it came from: ``address``, else ``$RAY_ADDRESS``, else the address
    ``ray start`` recorded on this machine; None to start a local cluster (also for ``--address local``).

    Unlike ``ray.init(address="auto")`` this never picks up any other Ray process found on the machine
    (such as another program's private ``ray.init()`` cluster).
    """
    if address == "local":
        return None, "--address"
    if address:
        return address, "--address"
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "$RAY_ADDRESS"
    recorded, where = ray_internals.recorded_address()
    return recorded, f"recorded by `ray start` in {where}"


def _check_listening(target: str, origin: str, timeout: float = 5.0) -> None:
    """Refuse at once an address where nothing listens: ``ray.init`` would retry it for minutes."""
    host, _, port = target.rpartition(":")
    if "://" in target or not port.isdigit():
        return  # "auto", or a Ray Client / Jobs URL: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise DistmtlError(f"no Ray cluster answers at {target} ({origin}): {exc.strerror or exc}; start it, or "
                           "give the address of a running one") from None


def local_machine() -> list[NodeGroup]:
    """This machine as the one-node cluster ``ray.init()`` would start: Ray's CPU count, the GPUs torch sees."""
    import torch

    return [NodeGroup("this machine", ray_internals.local_cpus(), float(torch.cuda.device_count()), head=True)]


def reachable_nodes() -> list[NodeGroup]:
    """The joined cluster's alive nodes plus the nodes its autoscaler may still launch."""
    import ray

    alive = [n for n in ray.nodes() if n["Alive"]]
    running = Counter(n.get("Labels", {}).get(NODE_TYPE_LABEL) for n in alive)
    more = [replace(t, count=t.count - running[t.name]) for t in autoscaler_node_types() if t.count > running[t.name]]
    return running_groups(alive) + more


def running_groups(nodes: list[dict[str, Any]]) -> list[NodeGroup]:
    """Alive nodes (``ray.nodes()`` entries) merged into groups of identical ones: the head first, then by name."""
    sizes: Counter[tuple[str, float, float, bool]] = Counter()
    for node in nodes:
        resources = node["Resources"]
        head = HEAD_RESOURCE in resources
        name = "head" if head else node.get("Labels", {}).get(NODE_TYPE_LABEL, "node")
        sizes[name, resources.get("CPU", 0.0), resources.get("GPU", 0.0), head] += 1
    groups = [NodeGroup(name, cpus, gpus, count, head) for (name, cpus, gpus, head), count in sizes.items()]
    return sorted(groups, key=lambda g: (not g.head, g.name, g.cpus, g.gpus))


def autoscaler_node_types() -> list[NodeGroup]:
    """The node types an autoscaler may launch, each with its maximum node count: from the cluster config
    that the autoscaler reports to Ray (KubeRay, autoscaler v2), else from the cluster launcher's config on
    the head node; none on a cluster without an autoscaler."""
    reported = ray_internals.autoscaler_node_types()
    if reported:
        return [NodeGroup(t.name, float(t.resources.get("CPU", 0)), float(t.resources.get("GPU", 0)),
                          UNBOUNDED if t.max_count < 0 else t.max_count, autoscaled=True)
                for t in reported if t.max_count != 0]
    path = LAUNCHER_CONFIG.expanduser()
    if path.is_file():
        import yaml

        return launcher_node_types(yaml.safe_load(path.read_text()))
    return []


def resolve_storage(path: str) -> str:
    """Local paths become absolute (workers run in other directories); URIs such as s3:// stay as given."""
    return path if "://" in path else str(Path(path).expanduser().resolve())
