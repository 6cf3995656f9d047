"""Search efficiency: TPE + ASHA against random search + FIFO on the same small real problem and trial budget.

For each seed, both searches run the same space (its parameters, base config and metric; only the sampler,
its seed and the scheduler differ) through the searcher and scheduler ``distmtl tune`` builds
(:mod:`distmtl.tune.algorithms`), one trial at a time on a local Ray cluster. Each trial trains the engine in
its Tune actor (one process: the figure is about search, not DDP). The table gives, per seed, the trial-epochs
random search spent until it first reached its final best score, and the trial-epochs TPE + ASHA spent until it
reached that same score; the headline is their ratio (mean ± std over seeds; goal ≤ 1/3). The figure counts
epochs, not seconds, so a busy machine does not change it. Both searches use the same sampler seed, and Optuna's
TPE samples its first 10 trials at random: with 10 trials or fewer the two propose the same configurations and
the comparison is ASHA against FIFO.

    python scripts/bench_search.py [--quick] [--seeds 5] [--trials 16] [--space search_spaces/quick.yaml]
                                   [--device cpu|cuda] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from distmtl.config.loading import parse_set_args
from distmtl.engine import DistContext, train
from distmtl.machine import describe
from distmtl.tune.algorithms import build_scheduler, build_searcher
from distmtl.tune.reporting import EPOCHS_DONE, for_tune
from distmtl.tune.space import Space

#: The small real problem unless --set says otherwise: quick.yaml's task set at 16 px, 8 epochs.
PROBLEM = {"data.num_samples": 600, "data.image_size": 16, "optim.epochs": 8}
METHODS = {"tpe+asha": {"sampler": "tpe", "scheduler": "asha"}, "random+fifo": {"sampler": "random", "scheduler": "fifo"}}


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
    """One search's reports in the order they were made: (wall time, epochs done, score)."""

    reports: list[tuple[float, int, float]]
    mode: str

    def best(self) -> float:
        scores = [s for _, _, s in self.reports]
        return max(scores) if self.mode == "max" else min(scores)

    def epochs_to(self, target: float) -> int | None:
        """Trial-epochs spent until a report first reached ``target`` (None: never)."""
        for spent, (_, _, score) in enumerate(self.reports, start=1):
            if (score >= target) if self.mode == "max" else (score <= target):
                return spent
        return None


def run_search(space_path: Path, method: dict[str, str], seed: int, trials: int, overrides: dict[str, Any],
               device: str, storage: Path) -> Search:
    """Run one search one trial at a time; return its per-epoch scores in report order."""
    import functools

    from ray import tune

    raw = yaml.safe_load(space_path.read_text())
    raw["base"] = str((space_path.parent / raw["base"]).resolve())
    raw["searcher"] = {**raw.get("searcher", {}), "name": "optuna", "sampler": method["sampler"], "seed": seed}
    raw["scheduler"] = {**raw.get("scheduler", {}), "name": method["scheduler"]}
    raw["num_samples"] = trials
    variant = storage / f"{method['sampler']}-{seed}.yaml"
    variant.write_text(yaml.safe_dump(raw))
    space = Space(variant, overrides)
    if space.pareto or space.file.cv:
        sys.exit("bench_search: give a single-metric space without cross-validation")
    name = f"{method['sampler']}-{method['scheduler']}-{seed}"
    tuner = tune.Tuner(
        tune.with_resources(functools.partial(trial, space=space, device=device), {"cpu": 1}),
        param_space=space.tune_space(),
        tune_config=tune.TuneConfig(metric=space.tune_metric, mode=space.mode, search_alg=build_searcher(space, name),
                                    scheduler=build_scheduler(space), num_samples=trials, max_concurrent_trials=1,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
    )
    results = tuner.fit()
    reports = []
    for result in results:
        frame = result.metrics_dataframe
        reports += [(float(t), int(e), float(v))
                    for t, e, v in zip(frame["reported_at"], frame[EPOCHS_DONE], frame[space.tune_metric])]
    return Search(sorted(reports), space.mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/quick.yaml")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=16, help="trials per search (the same budget for both)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the base config")
    parser.add_argument("--quick", action="store_true", help="3 seeds of 8 trials")
    args = parser.parse_args()
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's legacy reporter at verbose=0 prints nothing; this table speaks
    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    seeds, trials = (3, 8) if args.quick else (args.seeds, args.trials)
    overrides = {**PROBLEM, "train.device": args.device, **parse_set_args(args.set)}
    print(f"machine: {describe()}")
    print(f"space {args.space} with {overrides}; {trials} trials per search, one at a time; seeds 0…{seeds - 1}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            started = time.perf_counter()
            searches = {m: run_search(Path(args.space), spec, seed, trials, overrides, args.device, Path(tmp))
                        for m, spec in METHODS.items()}
            random, guided = searches["random+fifo"], searches["tpe+asha"]
            target = random.best()
            random_epochs, guided_epochs = random.epochs_to(target), guided.epochs_to(target)
            rows.append({"seed": seed, "target": target, "random_epochs": random_epochs,
                         "random_total": len(random.reports), "guided_epochs": guided_epochs,
                         "guided_total": len(guided.reports), "guided_best": guided.best(),
                         "ratio": (guided_epochs or len(guided.reports)) / random_epochs,
                         "reached": guided_epochs is not None, "seconds": time.perf_counter() - started})
    ray.shutdown()
    print("\n| seed | random: final best | random: epochs to it (of total) | TPE+ASHA: epochs to it (of total) "
          "| TPE+ASHA: best | ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        reached = r["guided_epochs"] if r["reached"] else "not reached"
        print(f"| {r['seed']} | {r['target']:.4f} | {r['random_epochs']} ({r['random_total']}) | {reached} "
              f"({r['guided_total']}) | {r['guided_best']:.4f} | {r['ratio']:.2f} |")
    ratios = [r["ratio"] for r in rows]
    spread = statistics.stdev(ratios) if len(ratios) > 1 else math.nan
    reached = sum(r["reached"] for r in rows)
    print(f"\nTPE+ASHA trial-epochs to random search's final best, as a fraction of random's: "
          f"{statistics.mean(ratios):.2f} ± {spread:.2f} (mean ± std, n = {len(rows)} seeds; reached in {reached}; "
          f"a seed where it was not reached counts its whole budget); goal ≤ 0.33")
    print(json.dumps({"asha_tpe_vs_random_trial_epochs": round(statistics.mean(ratios), 3),
                      "asha_tpe_vs_random_trial_epochs_std": round(spread, 3), "seeds": len(rows),
                      "reached": reached, "trials_per_search": trials, "machine": describe()}))


if __name__ == "__main__":
    main()
