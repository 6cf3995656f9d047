"""`ray submit` on a two-node cluster: `ray start --head` plus `ray start --address` with token
authentication, then `scripts/tune.py` run on the head as `ray submit` runs it (it finds the cluster
that `ray start` recorded, no address given).

The cluster is private to this module: its own Ray temp dir (so no other program on the machine
joins it or is joined by it), its own ports and auth token; both `ray start --block` processes lead
their own process group, which is terminated at the end, and no process of the cluster may be left.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray  # noqa: F401 - puts the psutil that Ray bundles on the path

# isort: split
import psutil
from mlflow.tracking import MlflowClient

from conftest import REPO

pytestmark = pytest.mark.ray

RAY = str(Path(sys.executable).parent / "ray")
STATE = """
import json, ray
from ray.util.state import list_actors
ray.init()
alive = [n for n in ray.nodes() if n["Alive"]]
actors = [[cls, a.node_id] for cls in ("RayTrainWorker", "ImplicitFunc")
          for a in list_actors(filters=[("class_name", "=", cls)], limit=1000, timeout=120)]
print(json.dumps({"head": [n["NodeID"] for n in alive if "node:__internal_head__" in n["Resources"]],
                  "nodes": {n["NodeID"]: n["Resources"].get("CPU") for n in alive}, "actors": actors}))
"""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_node(args: list[str], env: dict) -> subprocess.Popen:
    """`ray start --block …` in its own process group; returns once the node has registered with the GCS
    (`ray start` prints "Ray runtime started." only then); its further output is drained in the background."""
    proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ray runtime started" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc
    raise RuntimeError("ray start failed:\n" + "".join(lines))


def _cluster_processes(root: Path) -> list[psutil.Process]:
    """Every process whose command line names this cluster's private temp dir (all of Ray's do)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(str(root) in arg for arg in p.info["cmdline"] or []):
            found.append(p)
    return found


@pytest.fixture(scope="module")
def two_nodes():
    # Short: Ray's unix sockets live under the temp dir and their paths must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="r9", dir="/tmp"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(16))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    gcs, dashboard, client, *agents = _free_ports(11)
    # The cluster's own dashboard for Ray Train's placement-group cleaner: an address inherited from another
    # cluster of this test session (the ray_cluster fixture's) would refuse this cluster's token, the first
    # trial's placement group would never be removed, and the second trial would wait for its CPUs forever.
    env.update(RAY_TMPDIR=str(root), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), PYTHONPATH=str(REPO),
               RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{dashboard}")
    started = time.perf_counter()
    nodes = [_start_node(["--head", f"--port={gcs}", "--num-cpus=2", "--include-dashboard=true",
                          f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
                          f"--dashboard-agent-listen-port={agents[0]}", f"--dashboard-agent-grpc-port={agents[1]}",
                          f"--metrics-export-port={agents[2]}", f"--runtime-env-agent-port={agents[3]}"], env)]
    try:
        nodes.append(_start_node([f"--address=127.0.0.1:{gcs}", "--num-cpus=1",
                                  f"--dashboard-agent-listen-port={agents[4]}",
                                  f"--dashboard-agent-grpc-port={agents[5]}", f"--metrics-export-port={agents[6]}",
                                  f"--runtime-env-agent-port={agents[7]}"], env))
        print(f"two-node cluster up in {time.perf_counter() - started:.1f} s")
        yield root, env
    finally:
        stopping = time.perf_counter()
        for node in reversed(nodes):  # everything is thrown away, so no graceful shutdown is needed
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=60)
        left = psutil.wait_procs(_cluster_processes(root), timeout=60)[1]
        print(f"two-node cluster down in {time.perf_counter() - stopping:.1f} s")
        assert not left, f"processes of the test cluster still running: {[p.pid for p in left]}"
        shutil.rmtree(root)


def _state(env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", STATE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_sweep_submitted_to_the_head_runs_its_workers_on_both_nodes(two_nodes, tmp_path):
    root, env = two_nodes
    storage, uri = root / "shared", f"sqlite:///{tmp_path / 'mlflow.db'}"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "tune.py"), "--space", str(REPO / "search_spaces" / "quick.yaml"),
         "--num-samples", "2", "--storage", str(storage), "--mlflow-uri", uri, "--experiment", "twonode",
         "--set", "data.num_samples=240", "--set", "data.image_size=16", "--set", "optim.epochs=2"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=480)
    print(f"sweep on two nodes: {time.perf_counter() - started:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "joined the Ray cluster" in proc.stderr and "trial drivers on the head node" in proc.stderr

    state = _state(env)
    assert sorted(state["nodes"].values()) == [1.0, 2.0]
    workers = [node for cls, node in state["actors"] if cls == "RayTrainWorker"]
    drivers = [node for cls, node in state["actors"] if cls == "ImplicitFunc"]
    assert len(workers) == 4 and set(workers) == set(state["nodes"])  # 2 trials × 2 workers, on both nodes
    assert len(drivers) == 2 and set(drivers) == set(state["head"])  # trial drivers stay on the head

    client = MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name("twonode").experiment_id])
    runs = [r for r in found if "distmtl.trial_id" in r.data.tags]
    assert len(runs) == 2 and {r.info.status for r in found} == {"FINISHED"} and len(found) == 3  # + the sweep's parent
    logged = [[m.step for m in client.get_metric_history(r.info.run_id, "val/loss")] for r in runs]
    assert [0, 1] in logged  # ASHA may stop the second trial after its first epoch, never the first
    for run, epochs in zip(runs, logged):
        trial_dir = storage / "twonode-train" / run.data.tags["distmtl.trial_id"]
        checkpoints = list(trial_dir.glob("checkpoint_*/checkpoint.pt"))
        assert epochs == list(range(len(epochs))) and len(checkpoints) >= len(epochs) >= 1


def test_gpus_asked_of_the_joined_cluster_are_refused_before_any_trial(two_nodes, tmp_path):
    root, env = two_nodes
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "tune.py"), "--space", str(REPO / "search_spaces" / "quick.yaml"),
         "--gpus-per-worker", "1", "--storage", str(tmp_path / "results"), "--mlflow-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    print(f"refused in {time.perf_counter() - started:.1f} s")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "distmtl: error: --gpus-per-worker 1: the Ray cluster has no GPUs (nodes: head: 2 CPU; node: 1 CPU); "
        "use --gpus-per-worker 0 or a cluster with GPU nodes")
    assert not (tmp_path / "results").exists()


def test_a_driver_without_the_clusters_token_is_refused_with_one_line(two_nodes, tmp_path):
    root, env = two_nodes
    without = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    without["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "tune.py"), "--space", str(REPO / "search_spaces" / "quick.yaml"),
         "--storage", str(tmp_path / "results"), "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        env=without, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    print(f"refused in {time.perf_counter() - started:.1f} s")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "distmtl: error: cannot join the Ray cluster" in proc.stderr.strip().splitlines()[-1]
