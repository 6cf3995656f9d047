"""Train one config under several architectures at equal hyperparameters and print a table of
test metrics at the best validation epoch and parameter counts (in-process, one worker).

    python scripts/compare_architectures.py [--config search_spaces/configs/fine_coarse.yaml]
        [--architectures independent hard_sharing ...] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import time

from distmtl.config import load_config, parse_set_args
from distmtl.engine import LocalReporter, train

SIX = ["independent", "hard_sharing", "reuse_coarse", "reuse_fine", "shared_reuse_coarse", "shared_reuse_fine"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="search_spaces/configs/fine_coarse.yaml")
    parser.add_argument("--architectures", nargs="+", default=SIX)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    rows = []
    for architecture in args.architectures:
        overrides = {**parse_set_args(args.overrides), "model.architecture": architecture}
        config = load_config(args.config, overrides)
        started = time.perf_counter()
        final = train(config, LocalReporter())
        rows.append((architecture, final, time.perf_counter() - started))
    tasks = config.tasks
    print(f"| architecture | {' | '.join(f'test {t} accuracy' for t in tasks)} | parameters | best epoch | time (s) |")
    print("|---|" + "---|" * (len(tasks) + 3))
    for architecture, final, seconds in rows:
        accuracies = " | ".join(f"{final[f'test/{t}/accuracy']:.3f}" for t in tasks)
        print(f"| {architecture} | {accuracies} | {final['params/total']:,} | {final['best_epoch']} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
