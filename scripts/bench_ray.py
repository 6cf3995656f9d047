"""What Ray Train costs on top of plain PyTorch DDP: the steady-state epoch time of one config on N Ray Train
workers against the same N-process DDP run started with ``torch.multiprocessing`` (gloo on CPU, NCCL on CUDA),
and where a run's fixed cost goes before its first training step.

Both runs execute distmtl's engine (``distmtl.engine.train``) on identical data and seeds; only the launcher
differs. The start-up phases inside the worker come from the engine's own ``startup/*_s`` metrics.

    python scripts/bench_ray.py [--quick] [--device cpu|cuda] [--config search_spaces/configs/demo.yaml]
                                [--workers 2] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tabulate import tabulate

from distmtl.config.loading import load_config
from distmtl.config.schema import Config
from distmtl.engine import DistContext, LocalReporter, train
from distmtl.launch import ray_train
from distmtl.launch.ray_train import RayReporter, Resources, build_trainer
from distmtl.machine import describe

STARTUP_PHASES = ("data", "model", "ddp", "loaders", "first_step")
WORK_DIR = "DISTMTL_BENCH_RAY_DIR"


class RecordingRayReporter(RayReporter):
    """Ray Train's reporter that also appends rank 0's reports to a JSON-lines file the driver reads."""

    def __init__(self, history: str) -> None:
        super().__init__()
        self.history = history

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        if checkpoint_dir is not None:  # rank 0 hands the checkpoint
            with open(self.history, "a") as out:
                out.write(json.dumps({"at": time.time(), **metrics}) + "\n")
        super().report(metrics, checkpoint_dir)


def ray_loop(payload: dict[str, Any]) -> None:
    """A Ray Train worker: stamp the moment user code starts, then run the engine as ``worker_loop`` does, with a
    reporter that also records rank 0's reports (the directory comes from the driver's environment)."""
    import ray.train

    work = Path(os.environ[WORK_DIR])
    stamps = {"entry": time.time(), "process": psutil.Process().create_time()}
    (work / f"entry-{ray.train.get_context().get_world_rank()}").write_text(json.dumps(stamps))
    config = Config.model_validate(payload["config"])
    device = torch.device("cpu") if config.train.device == "cpu" else ray.train.torch.get_device()
    train(config, RecordingRayReporter(str(work / "ray.jsonl")), DistContext.current(device))


def torch_worker(rank: int, world: int, config: dict, backend: str, history: str, port: int) -> None:
    """A ``torch.multiprocessing`` DDP worker: join the process group and run the engine, on the same number of
    threads as a Ray Train worker of one CPU gets (Ray sets ``OMP_NUM_THREADS`` to the worker's CPUs)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    started = time.perf_counter()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    dist.init_process_group(backend, rank=rank, world_size=world)
    group_s = time.perf_counter() - started
    parsed = Config.model_validate(config)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    reporter = LocalReporter()
    train(parsed, reporter, DistContext.current(device))
    if rank == 0:
        Path(history).write_text("\n".join(json.dumps({"process_group_s": group_s, **m}) for m in reporter.history))
    dist.destroy_process_group()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torch(config: Config, workers: int, backend: str, work: Path) -> list[dict]:
    history = work / "torch.jsonl"
    mp.spawn(torch_worker, args=(workers, config.model_dump(), backend, str(history), free_port()), nprocs=workers)
    return [json.loads(line) for line in history.read_text().splitlines()]


def run_ray(config: Config, workers: int, gpus: float, work: Path) -> tuple[list[dict], dict[str, float]]:
    """One Ray Train run through distmtl's ``build_trainer`` on a fresh local cluster; returns rank 0's reports
    and the driver's wall clock at each stage."""
    import ray

    os.environ[WORK_DIR] = str(work)  # the local cluster's workers inherit the driver's environment
    clock = {"before_init": time.time()}
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    clock["after_init"] = time.time()
    ray_train.worker_loop = ray_loop  # build_trainer hands the module's loop to TorchTrainer
    trainer = build_trainer(config, Resources(workers, gpus, 1.0), str(work / "ray_results"), "bench")
    clock["fit"] = time.time()
    trainer.fit()
    stamps = [json.loads(p.read_text()) for p in work.glob("entry-*")]
    clock["entry"] = max(s["entry"] for s in stamps)  # the run starts training when its last worker is ready
    clock["process"] = max(s["process"] for s in stamps)
    ray.shutdown()
    return [json.loads(line) for line in (work / "ray.jsonl").read_text().splitlines()], clock


def import_seconds(module: str, repeats: int) -> float:
    """Median wall time of a fresh interpreter importing ``module``, less that of an empty interpreter."""
    def once(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - started
    return (statistics.median(once(f"import {module}") for _ in range(repeats))
            - statistics.median(once("pass") for _ in range(repeats)))


def steady(history: list[dict]) -> float:
    """Median training seconds per epoch after the first (which holds the start-up)."""
    return statistics.median(r["epoch_time_s"] for r in history[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="search_spaces/configs/demo.yaml")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each launcher, alternated")
    parser.add_argument("--quick", action="store_true", help="3 epochs, 1 run each")
    args = parser.parse_args()
    if args.device == "cuda" and torch.cuda.device_count() < args.workers:
        sys.exit(f"bench_ray: --device cuda needs {args.workers} visible GPUs, found {torch.cuda.device_count()}")
    epochs, repeats = (3, 1) if args.quick else (args.epochs, args.repeats)
    config = load_config(args.config, overrides={"optim.epochs": epochs, "train.device": args.device})
    backend, gpus = ("nccl", 1.0) if args.device == "cuda" else ("gloo", 0.0)
    print(f"machine: {describe()}")
    print(f"config {args.config}, {args.workers} workers, {epochs} epochs, device {args.device}, {repeats} run(s) each")

    torch_epochs, ray_epochs, phases, groups = [], [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            torch_history = run_torch(config, args.workers, backend, Path(tmp))
            ray_history, clock = run_ray(config, args.workers, gpus, Path(tmp))
        torch_epochs.append(steady(torch_history))
        ray_epochs.append(steady(ray_history))
        groups.append(torch_history[0]["process_group_s"])
        first = ray_history[0]
        inside = {p: first[f"startup/{p}_s"] for p in STARTUP_PHASES}
        phases.append({"ray_start": clock["after_init"] - clock["before_init"],
                       "to_worker_processes": clock["process"] - clock["fit"],
                       "worker_setup": clock["entry"] - clock["process"], **inside,
                       "first_step_after_fit": clock["entry"] - clock["fit"] + sum(inside.values())})

    imports = import_seconds("distmtl.launch.ray_train", 3)
    ratio = statistics.median(ray_epochs) / statistics.median(torch_epochs)
    print("\n" + tabulate([[f"torch.multiprocessing DDP ({backend})", f"{statistics.median(torch_epochs):.3f}"],
                           ["Ray Train", f"{statistics.median(ray_epochs):.3f}"],
                           ["**Ray / torch**", f"**{ratio:.3f}×**"]],
                          ["launcher", "steady-state epoch (s, median)"], tablefmt="github", disable_numparse=True))
    median = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    rows = [("Ray start (ray.init, local cluster)", "ray_start"),
            ("fit() → last worker process started (controller, placement group, actor launch)", "to_worker_processes"),
            ("worker process start → user code (imports, actor set-up, process group)", "worker_setup")]
    rows += [(f"engine: {p.replace('_', ' ')}", p) for p in STARTUP_PHASES]
    cells = [[label, f"{median[key]:.2f}"] for label, key in rows]
    cells += [["**first training step after fit()**", f"**{median['first_step_after_fit']:.2f}**"],
              ["for scale: importing distmtl.launch.ray_train in a fresh interpreter", f"{imports:.2f}"],
              [f"for scale: torch process group ({backend}), measured in the torch run",
               f"{statistics.median(groups):.2f}"]]
    print("\n" + tabulate(cells, ["fixed cost of one Ray Train run", "seconds (median)"], tablefmt="github",
                          disable_numparse=True))
    print(json.dumps({"ray_vs_torch_ddp": round(ratio, 3), "first_step_s": round(median["first_step_after_fit"], 2),
                      "ray_start_s": round(median["ray_start"], 2),
                      "to_worker_processes_s": round(median["to_worker_processes"], 2),
                      "worker_setup_s": round(median["worker_setup"], 2), "imports_s": round(imports, 2),
                      "machine": describe()}))


if __name__ == "__main__":
    main()
