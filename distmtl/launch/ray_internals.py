"""The three things distmtl needs from Ray that Ray offers no public API for, in one place.

Checked against Ray 2.60.0 (:data:`CHECKED_AGAINST`): each call below reads Ray's private modules, which may change
without notice, so no other distmtl module imports ``ray._private``, ``ray._common`` or an ``_internal`` module
(``tests/test_ray_internals.py`` enforces it and checks that each call still answers as distmtl expects).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The Ray version these calls were last read against.
CHECKED_AGAINST = "2.60.0"


def recorded_address() -> tuple[str | None, str]:
    """The address that the last ``ray start --head`` on this machine recorded (None: none recorded) and the file
    it is recorded in.

    ``ray.init()`` without an address joins that cluster or else starts a local one, but there is no public call
    that says which it will do before it does it (distmtl refuses impossible requests before a local cluster
    starts), and ``ray.init(address="auto")`` would also join any other Ray process found on the machine.
    """
    from ray._common.utils import get_ray_address_file
    from ray._private.utils import read_ray_address

    return read_ray_address(None), get_ray_address_file(None)


def local_cpus() -> float:
    """The CPUs a local cluster started by ``ray.init()`` gets on this machine: Ray's own count, which honours a
    container's CPU limit (``os.cpu_count()`` does not). Public APIs give it only once the cluster runs."""
    from ray._private.utils import get_num_cpus

    return float(get_num_cpus())


@dataclass(frozen=True)
class AutoscalerNodeType:
    """One node type of the joined cluster's autoscaler: its resources and the most nodes it may launch of it
    (-1: no limit)."""

    name: str
    resources: dict[str, float]
    max_count: int


def autoscaler_node_types() -> list[AutoscalerNodeType]:
    """The node types that the joined cluster's autoscaler (KubeRay, autoscaler v2) reported to Ray; none where
    no autoscaler reported any.

    Ray's answer to the request for a public "largest possible cluster" call (ray-project/ray#49501) was to store
    the autoscaler's config in the GCS (ray-project/ray#49568); only ``ray._private.state`` reads it back.
    """
    from ray._private.state import state

    config = state.get_cluster_config()
    if config is None:
        return []
    return [AutoscalerNodeType(g.name, dict(g.resources), g.max_count) for g in config.node_group_configs]
