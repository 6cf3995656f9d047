"""Ray's private API stays in distmtl.launch.ray_internals, and each of its calls still answers as distmtl expects
(a Ray upgrade that changes one fails here, not on a user's cluster)."""

import ast
import os
from pathlib import Path

import pytest

from distmtl.launch import ray_internals

from conftest import REPO

WRAPPER = REPO / "distmtl" / "launch" / "ray_internals.py"


def _private_ray_names(path: Path) -> list[str]:
    """Every dotted name under ``ray`` that ``path`` imports or reaches by attribute and that has a private part
    (``ray._private``, ``ray._common``, ``ray.train.v2._internal``, ...)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute):
            parts = [node.attr]
            while isinstance(node := node.value, ast.Attribute):
                parts.append(node.attr)
            if isinstance(node, ast.Name):
                names.append(".".join([node.id, *reversed(parts)]))
    private = [n for n in names if n.split(".")[0] == "ray"
               and any(p.startswith("_") and not p.startswith("__") for p in n.split("."))]
    return sorted(set(private))


def test_private_ray_names_are_found_in_imports_and_attributes(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import ray\nimport ray._private.utils\nfrom ray._common import utils\n"
                      "from ray.train.v2._internal.execution import context\nx = ray._private.state.state\n"
                      "v = ray.__version__\nfrom ray.train import report\n")
    assert _private_ray_names(source) == [
        "ray._common", "ray._common.utils", "ray._private", "ray._private.state", "ray._private.state.state",
        "ray._private.utils",
        "ray.train.v2._internal.execution", "ray.train.v2._internal.execution.context"]


def test_no_module_but_the_wrapper_uses_a_private_ray_module():
    modules = [*(REPO / "distmtl").rglob("*.py"), *(REPO / "scripts").rglob("*.py")]
    assert WRAPPER in modules and len(modules) > 50
    found = {str(p.relative_to(REPO)): names for p in modules if p != WRAPPER and (names := _private_ray_names(p))}
    assert found == {}, "private Ray API outside distmtl/launch/ray_internals.py"
    assert _private_ray_names(WRAPPER)  # the wrapper is where they are


def test_the_address_ray_start_records_is_read_from_rays_temp_dir(tmp_path, monkeypatch):
    """`ray start --head` writes its address to ray_current_cluster in Ray's temp dir ($RAY_TMPDIR/ray);
    tests/test_multinode.py shows a driver finding a cluster it really started."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    recorded = tmp_path / "ray" / "ray_current_cluster"
    assert ray_internals.recorded_address() == (None, str(recorded))
    recorded.parent.mkdir()
    recorded.write_text("10.0.0.7:6379\n")
    assert ray_internals.recorded_address() == ("10.0.0.7:6379", str(recorded))


def test_the_local_cpu_count_is_a_whole_number_of_this_machines_cpus(monkeypatch):
    monkeypatch.setenv("RAY_USE_MULTIPROCESSING_CPU_COUNT", "1")  # Ray's switch to the plain count
    assert ray_internals.local_cpus() == float(os.cpu_count())
    monkeypatch.delenv("RAY_USE_MULTIPROCESSING_CPU_COUNT")
    cpus = ray_internals.local_cpus()
    assert cpus == int(cpus) and 1 <= cpus <= os.cpu_count()  # a container's CPU limit may lower it


@pytest.mark.ray
def test_node_types_an_autoscaler_reports_to_the_gcs_are_read_back(ray_cluster):
    """Autoscaler v2 (KubeRay) stores its ClusterConfig in the GCS key-value store; written here as it does."""
    from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
    from ray.core.generated.autoscaler_pb2 import ClusterConfig, NodeGroupConfig
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

    from distmtl.launch.capacity import UNBOUNDED, NodeGroup
    from distmtl.launch.cluster import reachable_nodes

    assert ray_internals.autoscaler_node_types() == []  # no autoscaler on the fixture's cluster
    config = ClusterConfig(node_group_configs=[
        NodeGroupConfig(name="gpu", resources={"CPU": 4, "GPU": 1}, max_count=3),
        NodeGroupConfig(name="cpu", resources={"CPU": 8}, max_count=-1),
        NodeGroupConfig(name="off", resources={"CPU": 8}, max_count=0)])
    key, namespace = GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode(), GCS_AUTOSCALER_STATE_NAMESPACE.encode()
    _internal_kv_put(key, config.SerializeToString(), namespace=namespace)
    try:
        assert ray_internals.autoscaler_node_types() == [
            ray_internals.AutoscalerNodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, 3),
            ray_internals.AutoscalerNodeType("cpu", {"CPU": 8.0}, -1),
            ray_internals.AutoscalerNodeType("off", {"CPU": 8.0}, 0)]
        assert reachable_nodes() == [NodeGroup("head", 2.0, 0.0, 1, head=True),
                                     NodeGroup("gpu", 4.0, 1.0, 3, autoscaled=True),
                                     NodeGroup("cpu", 8.0, 0.0, UNBOUNDED, autoscaled=True)]
    finally:
        _internal_kv_del(key, namespace=namespace)
