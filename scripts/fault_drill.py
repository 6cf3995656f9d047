"""Fault drill: kill a random Ray Train worker at a random point of a `distmtl train` run, N times, and check
that every run recovers, loses at most the epoch in progress, and ends with the metrics of an
uninterrupted run.

Each run is a real `distmtl train` process with its own local Ray cluster (2 DDP workers), MLflow
SQLite store and checkpoint storage. The drill finds the run's `RayTrainWorker` processes among the
process's descendants and sends one of them SIGKILL — as a preempted node or the OOM killer would.

    python scripts/fault_drill.py [--runs 10] [--epochs 4] [--seed 0] [--quick]

Prints a table (with the machine) and, last, one JSON line:
``{"recovered": k, "runs": N, "max_epochs_lost": e, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from mlflow.tracking import MlflowClient
from tabulate import tabulate

from distmtl.machine import describe

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "search_spaces" / "configs" / "quick.yaml"
STARTED = re.compile(r"resumed from .* at epoch (\d+)|training \w+ on \d+/")


@dataclass
class Run:
    """One `distmtl train` process, its output lines with arrival times, and where it writes."""

    directory: Path
    name: str
    process: subprocess.Popen
    lines: list[tuple[float, str]] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.directory / 'mlflow.db'}"

    def epochs_logged(self) -> int:
        """Epochs whose report Ray Train has registered (each is logged to MLflow once registered)."""
        client = MlflowClient(self.uri)
        experiment = client.get_experiment_by_name("drill")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        return len(client.get_metric_history(runs[0].info.run_id, "val/loss")) if runs else 0


def start(directory: Path, name: str, epochs: int, samples: int) -> Run:
    command = [sys.executable, "-m", "distmtl", "train", "--config", str(CONFIG), "--workers", "2",
               "--address", "local", "--storage", str(directory / "results"), "--name", name,
               "--mlflow-uri", f"sqlite:///{directory / 'mlflow.db'}", "--experiment", "drill",
               "--set", f"optim.epochs={epochs}", "--set", f"data.num_samples={samples}"]
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    run = Run(directory, name, process)

    def read() -> None:
        for line in process.stdout:
            run.lines.append((time.monotonic(), line.rstrip()))

    threading.Thread(target=read, daemon=True).start()
    return run


def train_workers(run: Run) -> list[psutil.Process]:
    """The run's live Ray Train worker processes (descendants of its driver)."""
    try:
        children = psutil.Process(run.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def wait_for(predicate, timeout: float, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    return None


def final_metrics(run: Run) -> tuple[str, list[int], dict[str, float]]:
    """The MLflow run's status, the epochs logged (with repeats), and its test metrics."""
    client = MlflowClient(run.uri)
    (tracked,) = client.search_runs([client.get_experiment_by_name("drill").experiment_id])
    epochs = sorted(m.step for m in client.get_metric_history(tracked.info.run_id, "val/loss"))
    tests = {k: v for k, v in tracked.data.metrics.items() if k.startswith("test/") and k.count("/") == 2}
    return tracked.info.status, epochs, tests


def epoch_time(run: Run) -> float:
    """The mean training epoch time of a finished run, from its MLflow metrics."""
    client = MlflowClient(run.uri)
    (tracked,) = client.search_runs([client.get_experiment_by_name("drill").experiment_id])
    times = [m.value for m in client.get_metric_history(tracked.info.run_id, "epoch_time_s")]
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest |Δ| of a test metric counted as equal")
    parser.add_argument("--quick", action="store_true", help="3 runs of 3 epochs")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.epochs = 3, 3
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="distmtl-drill-"))
    print(f"fault drill: {args.runs} run(s) of `distmtl train` "
          f"({args.epochs} epochs, {args.samples} samples, 2 workers); "
          f"machine: {describe()}; "
          f"work in {root}", flush=True)

    (root / "baseline").mkdir()
    baseline = start(root / "baseline", "baseline", args.epochs, args.samples)
    wait_for(lambda: train_workers(baseline), 300)
    first_worker = time.monotonic()
    baseline.process.wait()
    training = time.monotonic() - first_worker
    status, _, reference = final_metrics(baseline)
    epoch_seconds = epoch_time(baseline)
    if baseline.process.returncode != 0 or status != "FINISHED":
        sys.exit("the uninterrupted baseline run failed:\n" + "\n".join(line for _, line in baseline.lines[-20:]))
    print(f"baseline: {training:.1f} s from the first worker to the end; {epoch_seconds:.1f} s per epoch", flush=True)

    rows, table = [], []
    for i in range(args.runs):
        directory = root / f"run{i}"
        directory.mkdir()
        run = start(directory, f"drill{i}", args.epochs, args.samples)
        if not wait_for(lambda run=run: len(train_workers(run)) == 2, 300):
            sys.exit(f"run {i}: its two Train workers did not start within 300 s")
        started = time.monotonic()
        epoch, fraction = rng.randrange(args.epochs), rng.random()  # the point: this far into this epoch
        wait_for(lambda run=run, epoch=epoch: run.epochs_logged() >= epoch or run.process.poll() is not None, 600,
                 poll=0.5)
        time.sleep(fraction * epoch_seconds)
        delay = time.monotonic() - started
        victims = train_workers(run)
        in_progress, victim = run.epochs_logged(), "none"
        killed_at = time.monotonic()
        if victims and run.process.poll() is None:
            target = rng.choice(victims)
            victim = f"pid {target.pid}"
            os.kill(target.pid, signal.SIGKILL)
        run.process.wait()
        resumed = [(t, int(m.group(1) or 0)) for t, line in run.lines if (m := STARTED.search(line)) and t > killed_at]
        resumed_at = resumed[0][1] if resumed else 0
        recover = resumed[0][0] - killed_at if resumed else float("nan")
        status, epochs, metrics = final_metrics(run)
        delta = max((abs(metrics.get(k, float("inf")) - v) for k, v in reference.items()), default=float("inf"))
        lost = in_progress - resumed_at + 1 if victim != "none" else 0
        ok = (run.process.returncode == 0 and status == "FINISHED" and epochs == list(range(args.epochs))
              and delta <= args.tolerance)
        rows.append({"recovered": ok, "lost": lost, "recover_s": recover, "delta": delta})
        print(f"run {i}: killed {victim} after {delay:.1f} s, {'recovered' if ok else 'NOT recovered'}", flush=True)
        table.append([str(i), victim, f"{delay:.1f}", str(in_progress), str(resumed_at) if resumed else "-", str(lost),
                      f"{recover:.1f}", str(run.process.returncode), str(epochs), f"{delta:.2g}",
                      "yes" if ok else "NO"])
    print(tabulate(table, ["run", "killed", "after (s)", "epoch in progress", "resumed at epoch", "epochs lost",
                           "recover (s)", "exit", "epochs logged", "max \\|Δ\\| test", "recovered"],
                   tablefmt="github", disable_numparse=True), flush=True)

    recovered = sum(r["recovered"] for r in rows)
    times = [r["recover_s"] for r in rows if r["recover_s"] == r["recover_s"]]
    print(f"\n{recovered}/{len(rows)} recovered; at most {max(r['lost'] for r in rows)} epoch(s) lost; "
          f"recovery {min(times, default=float('nan')):.1f}–{max(times, default=float('nan')):.1f} s after the kill")
    print(json.dumps({"recovered": recovered, "runs": len(rows), "max_epochs_lost": max(r["lost"] for r in rows),
                      "max_recover_s": round(max(times, default=float("nan")), 1),
                      "max_test_metric_delta": max(r["delta"] for r in rows)}))


if __name__ == "__main__":
    main()
