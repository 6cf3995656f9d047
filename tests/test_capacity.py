"""The arithmetic that refuses impossible requests and caps concurrency, on described clusters (no Ray)."""

import itertools

import pytest
import yaml

from distmtl.errors import DistmtlError
from distmtl.launch.capacity import (
    CPU_STEPS,
    TRIAL_CPUS,
    NodeGroup,
    Plan,
    Request,
    concurrency,
    launcher_node_types,
    plan,
    worker_slots,
)
from distmtl.launch.cluster import running_groups

from conftest import REPO

TRIAL = dict(driver_cpus=TRIAL_CPUS, workers_flag="--workers-per-trial")


def worst_case_fits(groups, request, cpus, k, on_head=False):
    """Brute force: for every way Ray could spread k trial drivers over the nodes (only the head when they
    are pinned there), do the k trials' workers still fit in what is left?"""
    nodes = [g for g in groups for _ in range(g.count)]
    hosts = [i for i, n in enumerate(nodes) if n.head or not on_head]
    for placement in itertools.product(hosts, repeat=k):
        load = [placement.count(i) * request.driver_cpus for i in range(len(nodes))]
        if any(load[i] > n.cpus + 1e-9 for i, n in enumerate(nodes)):
            continue  # Ray could not place the drivers like this
        left = sum(worker_slots(n, cpus, request.gpus_per_worker, load[i]) for i, n in enumerate(nodes))
        if left < k * request.workers:
            return False
    return True


def test_the_issues_two_one_cpu_nodes_get_half_cpu_workers_one_trial_at_a_time():
    # ray start --head / ray start --address, 1 CPU each: the old sizing (0.75 CPU from the cluster total)
    # left one of each trial's two workers unplaceable forever.
    groups = [NodeGroup("head", 1, head=True), NodeGroup("node", 1)]
    layout = plan(groups, Request(2, **TRIAL))
    assert (layout.cpus_per_worker, layout.max_concurrent) == (0.5, 1)
    assert not worst_case_fits(groups, Request(2, **TRIAL), 0.75, 1)
    assert worst_case_fits(groups, Request(2, **TRIAL), 0.5, 1)


def test_a_local_two_cpu_machine_keeps_its_exact_fit():
    layout = plan([NodeGroup("this machine", 2, head=True)], Request(2, **TRIAL))
    assert (layout.cpus_per_worker, layout.max_concurrent, layout.driver_on_head) == (0.75, 1, True)


@pytest.mark.parametrize("groups", [
    [NodeGroup("head", 2, head=True), NodeGroup("node", 1)],
    [NodeGroup("head", 0, head=True), NodeGroup("node", 3, count=2)],
    [NodeGroup("head", 1, head=True), NodeGroup("gpu", 4, 1, count=3)],
    [NodeGroup("head", 8, head=True), NodeGroup("gpu", 4, 2, count=2)],
])
@pytest.mark.parametrize("workers,gpus", [(1, 0), (2, 0), (3, 0), (2, 1), (1, 0.5)])
def test_planned_concurrency_fits_however_ray_places_the_drivers(groups, workers, gpus):
    """A plan's trials fit wherever Ray puts their drivers; a refused request has no CPU size and no driver
    placement under which even one trial would surely fit."""
    request = Request(workers, gpus, **TRIAL)
    try:
        layout = plan(groups, request)
    except DistmtlError:
        head = next(g for g in groups if g.head)
        pinnable = [True] if head.cpus >= request.driver_cpus else []  # pinned to a head too small: never placed
        assert not any(worst_case_fits(groups, request, cpus, 1, on_head)
                       for cpus in CPU_STEPS for on_head in [False, *pinnable])
        return
    assert worst_case_fits(groups, request, layout.cpus_per_worker, layout.max_concurrent, layout.driver_on_head)


def test_gpus_on_a_cluster_without_any_are_refused_naming_the_nodes():
    with pytest.raises(DistmtlError, match=r"--gpus-per-worker 1: the Ray cluster has no GPUs \(nodes: head: 2 CPU"):
        plan([NodeGroup("head", 2, head=True)], Request(2, 1.0, **TRIAL))
    with pytest.raises(DistmtlError, match="no node type its autoscaler may launch has any"):
        plan([NodeGroup("head", 8, head=True), NodeGroup("cpu", 8, count=4, autoscaled=True)], Request(2, 1.0))


def test_gpus_in_an_autoscaler_node_type_are_reachable():
    groups = [NodeGroup("head", 8, head=True), NodeGroup("gpu_worker", 4, 1, count=4, autoscaled=True)]
    layout = plan(groups, Request(2, 1.0, **TRIAL))
    assert layout.max_concurrent == 2  # 4 GPUs ÷ 2 GPUs per trial


def test_more_gpus_or_cpus_per_worker_than_any_node_has_are_refused():
    groups = [NodeGroup("head", 8, head=True), NodeGroup("gpu", 4, 1, count=4, autoscaled=True)]
    with pytest.raises(DistmtlError, match="no node has that many GPUs .*largest has 1"):
        plan(groups, Request(1, 2.0))
    with pytest.raises(DistmtlError, match="--cpus-per-worker 6: no node with enough GPUs has that many CPUs"):
        plan(groups, Request(1, 1.0, 6.0))  # the 8-CPU head has no GPU
    with pytest.raises(DistmtlError, match="--cpus-per-worker 16: no node has that many CPUs .*at most 8"):
        plan(groups, Request(1, 0.0, 16.0))


def test_more_workers_than_the_cluster_can_ever_place_are_refused_with_the_most_it_holds():
    groups = [NodeGroup("head", 1, head=True), NodeGroup("gpu", 4, 1, count=2, autoscaled=True)]
    with pytest.raises(DistmtlError, match=r"--workers-per-trial 3: 3 workers of 1 GPU plus 0.5 CPU .* "
                                           r"at most 2 such worker"):
        plan(groups, Request(3, 1.0, **TRIAL))
    with pytest.raises(DistmtlError, match=r"--workers 9: .* at most 8 such worker"):
        plan([NodeGroup("this machine", 2, head=True)], Request(9))


def test_trial_drivers_go_to_the_head_so_that_gpu_workers_keep_their_nodes_cpus():
    # Workers that take all 4 CPUs of a GPU node: a driver on a GPU node would block its worker.
    groups = [NodeGroup("head", 8, head=True), NodeGroup("gpu", 4, 1, count=4, autoscaled=True)]
    layout = plan(groups, Request(2, 1.0, 4.0, **TRIAL))
    assert layout.driver_on_head and layout.max_concurrent == 2
    assert layout.driver_resources(TRIAL_CPUS) == {"cpu": 0.5, "node:__internal_head__": 0.001}


def test_a_head_without_cpus_leaves_drivers_unpinned():
    layout = plan([NodeGroup("head", 0, head=True), NodeGroup("node", 4, count=2)], Request(2, **TRIAL))
    assert not layout.driver_on_head and layout.driver_resources(TRIAL_CPUS) == {"cpu": 0.5}
    assert layout.max_concurrent == 2  # 8 one-CPU slots; each trial: 2 workers + a driver that may spoil a slot


def test_concurrency_takes_the_smallest_limit_and_says_which():
    assert concurrency(8, None, 30, tpe=True) == (7, "a quarter of the trials (TPE learns from finished trials)")
    assert concurrency(2, None, 30, tpe=True) == (2, "what the cluster holds at once")
    assert concurrency(8, 16, 30, tpe=False) == (8, "what the cluster holds at once")
    assert concurrency(8, 3, 30, tpe=True) == (3, "--max-concurrent")
    assert concurrency(8, None, 2, tpe=True)[0] == 1


def _launcher(name, fill=None):
    config = yaml.safe_load((REPO / "cluster" / name).read_text())
    for node_type, resources in (fill or {}).items():  # what `ray up` fills in from the instance type on AWS
        config["available_node_types"][node_type]["resources"] = resources
    return config


def test_the_30_trial_sweep_on_cluster_yaml_runs_two_trials_at_once_with_drivers_on_the_head():
    # What `ray up` fills in for an m5.2xlarge head and g5.xlarge workers:
    config = _launcher("cluster.yaml", {"head": {"CPU": 8}, "gpu_worker": {"CPU": 4, "GPU": 1}})
    groups = [NodeGroup("head", 8, head=True)] + launcher_node_types(config)
    assert groups[1] == NodeGroup("gpu_worker", 4, 1, count=4, autoscaled=True)
    layout = plan(groups, Request(2, 1.0, **TRIAL))
    assert (layout.cpus_per_worker, layout.max_concurrent, layout.driver_on_head) == (1.0, 2, True)
    assert concurrency(layout.max_concurrent, None, 30, tpe=True)[0] == 2


def test_cluster_gcp_yaml_node_types_are_read_as_written():
    config = _launcher("cluster-gcp.yaml")
    assert launcher_node_types(config) == [NodeGroup("gpu_worker", 8, 1, count=4, autoscaled=True)]


def test_running_nodes_are_grouped_from_ray_nodes_entries_head_first():
    nodes = [  # in no particular order, as ray.nodes() gives them
        {"Resources": {"CPU": 4.0, "GPU": 1.0}, "Labels": {"ray.io/node-group": "gpu_worker"}},
        {"Resources": {"CPU": 8.0, "node:__internal_head__": 1.0}, "Labels": {}},
        {"Resources": {"CPU": 4.0, "GPU": 1.0}, "Labels": {"ray.io/node-group": "gpu_worker"}},
    ]
    assert running_groups(nodes) == [NodeGroup("head", 8.0, 0.0, 1, head=True), NodeGroup("gpu_worker", 4.0, 1.0, 2)]


@pytest.mark.ray
def test_a_running_cluster_is_read_from_ray_and_an_impossible_request_leaves_it_alone(ray_cluster):
    from distmtl.launch.cluster import ensure_ray, reachable_nodes

    assert reachable_nodes() == [NodeGroup("head", 2.0, 0.0, 1, head=True)]  # the fixture's ray.init(num_cpus=2)
    assert ensure_ray(Request(2, **TRIAL)) == Plan(0.75, 1, True)
    with pytest.raises(DistmtlError, match=r"the Ray cluster has no GPUs \(nodes: head: 2 CPU\)"):
        ensure_ray(Request(2, 1.0, **TRIAL))
    assert ray_cluster.is_initialized()
