"""Search efficiency: distmtl's default schedulers against running every trial to its end, on two problems.

For each problem and seed, pairs of searches run the same space (its parameters, base config and metrics; only
the sampler, its seed and the scheduler differ) through the searcher and scheduler ``distmtl tune`` builds
(:mod:`distmtl.tune.algorithms`), one trial at a time on a local Ray cluster. Each trial trains the engine in its
Tune actor (one process: the figure is about search, not DDP). Figures count trial-epochs, not seconds, so a busy
machine does not change them.

* Single objective: TPE + ASHA against random search + FIFO. Per seed, the trial-epochs random search spent until
  it first reached its final best score, and those TPE + ASHA spent until it reached that same score (a seed where
  it never did counts its whole budget); the headline is their ratio (goal ≤ 1/3, reached in every seed).
* Two objectives (a Pareto sweep): multi-objective ASHA against FIFO, both with multi-objective TPE and the same
  seed. A search's front at any moment is each trial's latest report; the figure is the trial-epochs MO-ASHA spent
  until its front's hypervolume came within 1 % of FIFO's final one, over those FIFO spent until it did so itself
  (goal ≤ 1/2). The reference point is stated with the problem, so both searches are measured from the same one.

Problems: ``spread`` — the demo's base config and scheduler (``search_spaces/demo.yaml``: ASHA grace 3, η 2) at
16 px, 1,200 images, 8 epochs, with the learning rate, weight decay, dropout, input noise, λ and bottleneck searched
over wide ranges and ranked by shape-space R², on which configurations differ by tens of points (fine accuracy stays
at chance at this size, the same for every trial); ``flat`` — ``search_spaces/quick.yaml`` (its six parameters,
its metric, ASHA grace 1) at 16 px, where every trial lands within 1 % of the others (the hard case for a model of
the objective). The Pareto searches rank shape R² against colour accuracy, on ``spread`` only: on ``flat`` no
trial reaches an R² above 0, so its fronts have no volume from the reference point.

    python scripts/bench_search.py [--quick] [--seeds 5] [--first-seed 0] [--trials 16] [--problems spread,flat]
                                   [--objectives single,pareto] [--device cpu|cuda] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tabulate import tabulate

from distmtl.config.loading import parse_set_args
from distmtl.engine import DistContext, train
from distmtl.machine import describe
from distmtl.tune.algorithms import build_scheduler, build_searcher
from distmtl.tune.hypervolume import hypervolume
from distmtl.tune.reporting import for_tune
from distmtl.tune.space import Space

REPO = Path(__file__).resolve().parents[1]
#: Both objectives of the Pareto searches (maximised): shape-space R² against colour accuracy, which the shape
#: weight λ trades; the reference point is R² 0 (predicting the mean) and accuracy 0.
PARETO = {"metric": ["val/shape/r2", "val/colour/accuracy"], "mode": ["max", "max"], "reference_point": [0.0, 0.0]}


@dataclass(frozen=True)
class Problem:
    """A space file, the base-config overrides that size it for this machine, and the single-objective metric and
    parameters to search in place of its own (None: the file's)."""

    space: str
    overrides: dict[str, Any]
    metric: str | None = None
    parameters: dict[str, Any] | None = None
    pareto: bool = True  # whether the two-objective comparison means anything here


PROBLEMS = {
    "spread": Problem("search_spaces/demo.yaml",
                      {"data.num_samples": 1200, "data.image_size": 16, "model.channels": [16, 32, 64],
                       "optim.epochs": 8},
                      "val/shape/r2",
                      {"optim.lr": {"type": "loguniform", "low": 1.0e-4, "high": 5.0e-2},
                       "optim.weight_decay": {"type": "loguniform", "low": 1.0e-6, "high": 1.0e-1},
                       "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
                       "data.noise_level": {"type": "uniform", "low": 0.0, "high": 0.3},
                       "weighting.weights.shape": {"type": "loguniform", "low": 0.5, "high": 64.0},
                       "model.bottleneck": {"type": "choice", "values": [16, 32, 64, 128]}}),
    "flat": Problem("search_spaces/quick.yaml", {"data.num_samples": 600, "data.image_size": 16, "optim.epochs": 8},
                    pareto=False),
}
#: The compared searches: (name, sampler, scheduler); the first of each pair is distmtl's default.
SINGLE = [("tpe+asha", "tpe", "asha"), ("random+fifo", "random", "fifo")]
TWO = [("tpe+moasha", "tpe", "moasha"), ("tpe+fifo", "tpe", "fifo")]


class TuneReporter:
    """The engine's reporter inside a Tune function trainable: every epoch goes to Tune as a sweep's would."""

    def __init__(self, objectives: list[tuple[str, str]]) -> None:
        self.objectives = objectives

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        from ray import tune

        tune.report({**for_tune(metrics, self.objectives), "reported_at": time.time()})

    @contextlib.contextmanager
    def restore_dir(self) -> Iterator[str | None]:
        yield None

    def resumed(self, metrics: dict[str, float]) -> None:
        """Benchmark trials never resume."""


def trial(sampled: dict[str, Any], *, space: Space, device: str) -> None:
    """One trial: the space's config with the sampled values, trained in this process."""
    config = space.trial_config(sampled)
    train(config, TuneReporter(space.objectives), DistContext(device=torch.device(device)))


@dataclass
class Search:
    """One search's reports in the order they were made: (wall time, trial id, objective values)."""

    reports: list[tuple[float, str, tuple[float, ...]]]
    modes: list[str]

    def best(self) -> float:
        scores = [v[0] for _, _, v in self.reports]
        return max(scores) if self.modes[0] == "max" else min(scores)

    def epochs_to(self, target: float) -> int | None:
        """Trial-epochs spent until a report first reached ``target`` (None: never)."""
        for spent, (_, _, (score, *_)) in enumerate(self.reports, start=1):
            if (score >= target) if self.modes[0] == "max" else (score <= target):
                return spent
        return None

    def hypervolumes(self, reference: list[float]) -> list[float]:
        """After each report, the hypervolume of every trial's latest values so far."""
        latest: dict[str, tuple[float, ...]] = {}
        volumes = []
        for _, trial_id, values in self.reports:
            latest[trial_id] = values
            volumes.append(hypervolume(list(latest.values()), reference, self.modes))
        return volumes


def run_search(problem: Problem, pareto: bool, sampler: str, scheduler: str, seed: int, trials: int,
               overrides: dict[str, Any], device: str, storage: Path) -> Search:
    """Run one search one trial at a time; return its per-epoch reports in report order."""
    from ray import tune

    space_path = REPO / problem.space
    raw = yaml.safe_load(space_path.read_text())
    raw["base"] = str((space_path.parent / raw["base"]).resolve())
    raw["searcher"] = {**raw.get("searcher", {}), "name": "optuna", "sampler": sampler, "seed": seed}
    raw["scheduler"] = {**raw.get("scheduler", {}), "name": scheduler}
    raw["num_samples"] = trials
    if problem.parameters:
        raw["parameters"] = problem.parameters
    if problem.metric:
        raw["metric"] = problem.metric
        raw.pop("mode", None)
    if pareto:
        raw.update(PARETO)
    name = f"{sampler}-{scheduler}-{seed}-{'pareto' if pareto else 'single'}"
    variant = storage / f"{name}.yaml"
    variant.write_text(yaml.safe_dump(raw))
    space = Space(variant, {**problem.overrides, **overrides})
    tuner = tune.Tuner(
        tune.with_resources(functools.partial(trial, space=space, device=device), {"cpu": 1}),
        tune_config=tune.TuneConfig(metric=None if pareto else space.tune_metric, mode=None if pareto else space.mode,
                                    search_alg=build_searcher(space, name), scheduler=build_scheduler(space),
                                    num_samples=trials, max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
    )
    reports = []
    for result in tuner.fit():
        frame = result.metrics_dataframe
        columns = [frame[m] for m in space.metrics] if pareto else [frame[space.tune_metric]]
        reports += [(float(t), str(result.metrics["trial_id"]), tuple(float(c.iloc[i]) for c in columns))
                    for i, t in enumerate(frame["reported_at"])]
    metrics_modes = space.modes if pareto else [space.mode]
    return Search(sorted(reports), metrics_modes)


def single_row(searches: dict[str, Search]) -> dict[str, Any]:
    """TPE + ASHA's trial-epochs to random search's final best, against random's own."""
    random, guided = searches["random+fifo"], searches["tpe+asha"]
    target = random.best()
    random_epochs, guided_epochs = random.epochs_to(target), guided.epochs_to(target)
    return {"target": target, "baseline_epochs": random_epochs, "baseline_total": len(random.reports),
            "epochs": guided_epochs, "total": len(guided.reports), "best": guided.best(),
            "ratio": (guided_epochs or len(guided.reports)) / random_epochs, "reached": guided_epochs is not None}


def pareto_row(searches: dict[str, Search]) -> dict[str, Any]:
    """MO-ASHA's trial-epochs to within 1 % of FIFO's final hypervolume, against FIFO's own."""
    fifo, moasha = searches["tpe+fifo"], searches["tpe+moasha"]
    reference = PARETO["reference_point"]
    fifo_volumes, moasha_volumes = fifo.hypervolumes(reference), moasha.hypervolumes(reference)
    target = 0.99 * fifo_volumes[-1]
    fifo_epochs = next(i for i, v in enumerate(fifo_volumes, start=1) if v >= target)
    reached = next((i for i, v in enumerate(moasha_volumes, start=1) if v >= target), None)
    return {"target": fifo_volumes[-1], "baseline_epochs": fifo_epochs, "baseline_total": len(fifo.reports),
            "epochs": reached, "total": len(moasha.reports), "best": moasha_volumes[-1],
            "ratio": (reached or len(moasha.reports)) / fifo_epochs, "reached": reached is not None}


def summary(rows: list[dict[str, Any]]) -> tuple[float, float, int]:
    """(mean ratio, its std, seeds where the target was reached)."""
    ratios = [r["ratio"] for r in rows]
    return statistics.mean(ratios), statistics.stdev(ratios) if len(ratios) > 1 else math.nan, \
        sum(r["reached"] for r in rows)


def print_table(title: str, baseline: str, method: str, score: str, rows: list[dict[str, Any]]) -> None:
    cells = []
    for r in rows:
        reached = r["epochs"] if r["reached"] else "not reached"
        cells.append([r["problem"], str(r["seed"]),
                      f"{r['target']:.4f} ({r['baseline_epochs']} of {r['baseline_total']})",
                      f"{reached} ({r['total']})", f"{r['best']:.4f}", f"{r['ratio']:.2f}"])
    print(f"\n{title}\n" + tabulate(cells, ["problem", "seed", f"{baseline}: final {score} (epochs to it, of total)",
                                            f"{method}: epochs to it (of its total)", f"{method}: final {score}",
                                            "ratio"], tablefmt="github", disable_numparse=True))
    for problem in dict.fromkeys(r["problem"] for r in rows):
        mean, std, reached = summary([r for r in rows if r["problem"] == problem])
        n = sum(r["problem"] == problem for r in rows)
        print(f"{problem}: {method} / {baseline} trial-epochs {mean:.2f} ± {std:.2f} (mean ± std, n = {n} seeds; "
              f"target reached in {reached})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one (to split a run)")
    parser.add_argument("--trials", type=int, default=16, help="trials per search (the same budget for all)")
    parser.add_argument("--problems", default="spread,flat", help=f"comma-separated, of {', '.join(PROBLEMS)}")
    parser.add_argument("--objectives", default="single,pareto", help="comma-separated: single, pareto")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the base config")
    parser.add_argument("--quick", action="store_true", help="2 seeds of 8 trials")
    args = parser.parse_args()
    problems = [p for p in args.problems.split(",") if p]
    objectives = [o for o in args.objectives.split(",") if o]
    if not set(problems) <= set(PROBLEMS) or not set(objectives) <= {"single", "pareto"}:
        parser.error(f"--problems takes {', '.join(PROBLEMS)}; --objectives takes single, pareto")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's legacy reporter at verbose=0 prints nothing; this table speaks
    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds, trials = (2, 8) if args.quick else (args.seeds, args.trials)
    overrides = {"train.device": args.device, **parse_set_args(args.set)}
    print(f"machine: {describe()}")
    for name in problems:
        p = PROBLEMS[name]
        print(f"problem {name}: {p.space} with {p.overrides}" + (f", searching {list(p.parameters)}" if p.parameters
                                                                   else ", its own parameters"))
    seed_list = range(args.first_seed, args.first_seed + seeds)
    print(f"{trials} trials per search, one at a time; seeds {seed_list[0]}…{seed_list[-1]}; objectives {objectives}; "
          f"Pareto: {PARETO}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows: dict[str, list[dict[str, Any]]] = {"single": [], "pareto": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seed_list:
            for name in problems:
                for objective in objectives:
                    if objective == "pareto" and not PROBLEMS[name].pareto:
                        continue
                    started = time.perf_counter()
                    pairs = SINGLE if objective == "single" else TWO
                    searches = {label: run_search(PROBLEMS[name], objective == "pareto", sampler, scheduler, seed,
                                                  trials, overrides, args.device, Path(tmp))
                                for label, sampler, scheduler in pairs}
                    row = (single_row if objective == "single" else pareto_row)(searches)
                    rows[objective].append({"problem": name, "seed": seed, **row,
                                            "seconds": time.perf_counter() - started})
                    print(f"  {name} {objective} seed {seed}: ratio {row['ratio']:.2f} "
                          f"({'reached' if row['reached'] else 'not reached'}) "
                          f"in {rows[objective][-1]['seconds']:.0f} s; "
                          f"{json.dumps({'objective': objective, **rows[objective][-1]})}", flush=True)
    ray.shutdown()
    if rows["single"]:
        print_table("Single objective: TPE + ASHA vs random search + FIFO (goal ≤ 0.33, reached in every seed)",
                    "random+FIFO", "TPE+ASHA", "best", rows["single"])
    if rows["pareto"]:
        print_table("Two objectives: MO-ASHA vs FIFO, both multi-objective TPE (goal ≤ 0.5; target: within 1 % of "
                    "FIFO's final hypervolume)", "FIFO", "MO-ASHA", "hypervolume", rows["pareto"])
    result: dict[str, Any] = {"seeds": seeds, "trials_per_search": trials, "machine": describe()}
    headline = problems[0]
    for objective, key in (("single", "asha_tpe_vs_random_trial_epochs"), ("pareto", "moasha_vs_fifo_trial_epochs")):
        for name in problems:
            chosen = [r for r in rows[objective] if r["problem"] == name]
            if not chosen:
                continue
            mean, std, reached = summary(chosen)
            prefix = key if name == headline else f"{name}_{key}"
            result.update({prefix: round(mean, 3), f"{prefix}_std": round(std, 3), f"{prefix}_reached": reached,
                           f"{prefix}_per_seed": [round(r["ratio"], 3) for r in chosen]})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
