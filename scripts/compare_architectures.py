"""Train one config under several variants at equal hyperparameters (in this process, one worker) and
print a table: each task's main test metric at the best validation epoch, parameters, and for
Selective Sharing the lock epoch and the number of branches.

    python scripts/compare_architectures.py                       # the six fine/coarse architectures
    python scripts/compare_architectures.py --preset selective \\
        --config search_spaces/configs/digits_one_vs_all.yaml     # independent, hard sharing, 3 criteria
    python scripts/compare_architectures.py --variant "wide:model.bottleneck=256" --set optim.epochs=5
"""

from __future__ import annotations

import argparse
import math
import time

from distmtl.config import load_config, parse_set_args
from distmtl.engine import LocalReporter, train
from distmtl.tasks import build_tasks

PRESETS = {
    "fine_coarse": {a: {"model.architecture": a} for a in
                    ["independent", "hard_sharing", "reuse_coarse", "reuse_fine", "shared_reuse_coarse", "shared_reuse_fine"]},
    "selective": {
        "independent": {"model.architecture": "independent"},
        "hard_sharing": {"model.architecture": "hard_sharing"},
        **{f"selective ({c})": {"model.architecture": "selective_sharing", "model.selective.criterion": c}
           for c in ("similarity", "dissimilarity", "variance")},
    },
}


MAIN_METRIC = {"binary": "balanced_accuracy", "regression": "mae", "classification": "accuracy"}


def main_metric(task) -> str:
    """The column shown for a task: balanced accuracy for one-vs-all (binary) tasks, where plain accuracy
    rewards "always no"; MAE for regression; accuracy for classification; else the kind's first metric."""
    return MAIN_METRIC.get(task.kind, next(iter(task.metric_modes)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="search_spaces/configs/fine_coarse.yaml")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fine_coarse")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="compare these instead of the preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applies to every variant")
    args = parser.parse_args()
    variants = PRESETS[args.preset]
    if args.variant:
        variants = {name: parse_set_args(spec.split(",")) for name, _, spec in (v.partition(":") for v in args.variant)}
    rows = []
    for name, changes in variants.items():
        config = load_config(args.config, {**parse_set_args(args.overrides), **changes})
        started = time.perf_counter()
        rows.append((name, train(config, LocalReporter()), time.perf_counter() - started))
    from distmtl.data.sources import check_targets

    tasks = build_tasks(config.tasks, check_targets(config.data, config.tasks))
    columns = [f"{t} {main_metric(task)}" for t, task in tasks.items()]
    print(f"| variant | {' | '.join(columns)} | parameters | lock epoch | branches | time (s) |")
    print("|---|" + "---|" * (len(columns) + 4))
    for name, final, seconds in rows:
        values = " | ".join(f"{final[f'test/{t}/{main_metric(task)}']:.3f}" for t, task in tasks.items())
        lock = final.get("selective/lock_epoch", math.nan)
        branches = final.get("selective/branches", "")
        print(f"| {name} | {values} | {final['params/total']:,} | {'' if math.isnan(lock) or lock < 0 else int(lock)} "
              f"| {int(branches) if branches != '' else ''} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
