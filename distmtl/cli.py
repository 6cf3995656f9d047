"""The ``distmtl`` command line: ``train``, ``tune``, ``affinity``, ``recipe``, ``baseline``, ``evaluate``,
``data convert`` and ``ui``.

Input problems (bad YAML, unknown keys, out-of-range values, missing files) print one line and
exit with status 2 before anything starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from distmtl.errors import DistmtlError, RunFailed
from distmtl.logs import configure_logging

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                        help="GPUs per Train worker (0: CPU with gloo; >0: NCCL)")
    parser.add_argument("--cpus-per-worker", type=float, default=None, metavar="C",
                        help="CPUs per Train worker (default 1, shrunk to fit a small machine)")
    parser.add_argument("--storage", default="ray_results", metavar="PATH",
                        help="shared storage for results and checkpoints (a local path, NFS or s3://...)")
    parser.add_argument("--mlflow-uri", default=None, metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    parser.add_argument("--experiment", default=None, metavar="NAME", help="MLflow experiment / Ray run group name")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: $RAY_ADDRESS, else the cluster `ray start` recorded "
                             "on this machine, else start a local one)")
    parser.add_argument("--max-failures", type=int, default=None, metavar="N",
                        help="restarts of a run's worker group after a worker dies, each resuming from the latest "
                             "checkpoint (default: train.max_failures, 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optim.lr=0.001 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    parser = argparse.ArgumentParser(prog="distmtl", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final summary")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="tune: also Ray's own notices and every worker's output "
                             "(default: one line per trial event)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one config with Ray Train (DDP over N workers)")
    train.add_argument("--config", required=True, metavar="FILE", help="run configuration (YAML)")
    train.add_argument("--workers", type=_worker_count, default=2, metavar="N|MIN-MAX",
                       help="Train workers (DDP ranks), default 2; MIN-MAX runs elastically (Ray Train restarts the "
                            "group with as many workers as the cluster can place, between MIN and MAX)")
    train.add_argument("--name", default=None, help="run name (default: config name + timestamp)")
    train.add_argument("--resume", default=None, metavar="CHECKPOINT_DIR",
                       help="resume from a checkpoint directory written by an earlier run")
    train.add_argument("--cv", type=int, nargs="?", const=5, default=None, metavar="K",
                       help="grouped K-fold cross-validation (K defaults to 5): K runs, mean ± std per task")
    _add_ray_options(train)

    tune = sub.add_parser("tune", help="search hyperparameters with Ray Tune + Optuna + ASHA")
    tune.add_argument("--space", required=True, metavar="FILE", help="search-space file (YAML)")
    tune.add_argument("--num-samples", type=int, default=None, metavar="N", help="number of trials")
    tune.add_argument("--workers-per-trial", type=int, default=None, metavar="N", help="DDP workers per trial")
    tune.add_argument("--max-concurrent", type=int, default=None, metavar="N", help="trials running at once")
    tune.add_argument("--dry-run", action="store_true", help="validate and print the resolved space; start nothing")
    tune.add_argument("--resume", action="store_true",
                      help="continue the interrupted sweep at STORAGE/EXPERIMENT (give the same command again plus "
                           "--resume): finished trials stay, unfinished and errored ones continue from their last "
                           "checkpoint in their own MLflow run, the searcher keeps its state")
    tune.add_argument("--register", default=None, metavar="NAME",
                      help="register the best trial's model in MLflow's model registry as NAME")
    _add_ray_options(tune)

    affinity = sub.add_parser("affinity", help="one short run that measures task affinity, then the task grouping "
                                               "for each budget that maximises it")
    affinity.add_argument("--config", required=True, metavar="FILE", help="run configuration (YAML)")
    affinity.add_argument("--workers", type=int, default=2, metavar="N", help="Train workers (DDP ranks), default 2")
    affinity.add_argument("--budget", action="append", default=[], metavar="N|Fx",
                          help="a number of branches (2) or a fraction of independent networks' parameters (0.5x), "
                               "repeatable (default: 2 … K−1 branches and 0.5x)")
    affinity.add_argument("--epochs", type=int, default=None, metavar="E",
                          help="epochs of the affinity run (default: a third of the config's, at least 2)")
    affinity.add_argument("--every", type=int, default=5, metavar="S",
                          help="measure every S training steps (default 5)")
    affinity.add_argument("--on", default="hard_sharing", choices=["hard_sharing", "branches"],
                          help="the model measured: one hard-shared network (TAG's setting), or every task on its own "
                               "Selective Sharing branch, each task's step applied to every branch")
    affinity.add_argument("--signal", default="lookahead", choices=["lookahead", "lookahead_net", "cosine"],
                          help="what the groupings maximise (default lookahead: TAG's inter-task affinity; "
                               "lookahead_net: net of the optimizer's drift)")
    affinity.add_argument("--name", default=None, help="run name (default: config name + affinity + timestamp)")
    _add_ray_options(affinity)

    recipe = sub.add_parser("recipe", help="run an experiment of the source documents: a table of mean ± std over "
                                           "seeds, every run a child of one MLflow parent run")
    recipe.add_argument("name", nargs="?", metavar="NAME", help="the recipe (see --list)")
    recipe.add_argument("--list", action="store_true", help="list the recipes and what each table shows")
    recipe.add_argument("--quick", action="store_true", help="tiny sizes (seconds per run) to check the pipeline")
    recipe.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="seeds per variant (default: the recipe's, at least 3; --quick: 2)")
    recipe.add_argument("--first-seed", type=int, default=0, metavar="S",
                        help="seeds S, S+1, … (default 0): check a finding on data no one has looked at")
    recipe.add_argument("--root", default=None, metavar="DIR",
                        help="add rows on a real data set at DIR "
                             "(fine_coarse: CIFAR-100; cross_stitch: Oxford-IIIT Pet)")
    recipe.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="train.device of every run")
    recipe.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of every run (repeatable)")
    recipe.add_argument("--mlflow-uri", default=None, metavar="URI")
    recipe.add_argument("--experiment", default=None, metavar="NAME",
                        help="MLflow experiment (default: the recipe's name)")

    baseline = sub.add_parser("baseline", help="baselines: single-task networks for Δm (--single-task), or the "
                                               "transfer-learning baseline (frozen classifier + ridge map)")
    baseline.add_argument("--config", required=True, metavar="FILE", help="run configuration (YAML)")
    baseline.add_argument("--single-task", action="store_true",
                          help="train each task of the config alone and write a baseline file (--out) that "
                               "train.baseline points to; runs then report val/delta_m and test/delta_m")
    baseline.add_argument("--out", default=None, metavar="FILE", help="--single-task: the baseline file to write")
    baseline.add_argument("--seeds", type=int, default=3, metavar="N", help="--single-task: seeds per task (default 3)")
    baseline.add_argument("--force", action="store_true", help="--single-task: replace --out if it exists")
    baseline.add_argument("--classify", default=None, metavar="TASK", help="transfer: the classification task to train")
    baseline.add_argument("--map", default=None, metavar="TASK",
                          help="transfer: the regression (coordinates) task to map to")
    baseline.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    baseline.add_argument("--mlflow-uri", default=None, metavar="URI")
    baseline.add_argument("--experiment", default=None, metavar="NAME")

    data = sub.add_parser("data", help="data tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    convert = data_sub.add_parser("convert", help="write a source into one chunked HDF5 file")
    what = convert.add_mutually_exclusive_group(required=True)
    what.add_argument("--source", help="source name (synthetic, digits, cifar100, oxford_pet, mnist, omniglot)")
    what.add_argument("--config", metavar="FILE", help="take the data section of a run config (e.g. a combined source)")
    convert.add_argument("--root", default=None, metavar="DIR", help="where a file-based source's files are")
    convert.add_argument("--out", required=True, metavar="FILE.h5", help="the HDF5 file to write")
    convert.add_argument("--chunk", type=int, default=64, metavar="N", help="samples per HDF5 chunk (default 64)")
    convert.add_argument("--compression", default="gzip", choices=["gzip", "lzf", "none"])
    convert.add_argument("--image-size", type=int, default=None, metavar="PX", help="image side in pixels")
    convert.add_argument("--num-samples", type=int, default=None, metavar="N", help="generator size / subset size")
    convert.add_argument("--seed", type=int, default=None)
    convert.add_argument("--force", action="store_true", help="replace --out if it exists")

    evaluate = sub.add_parser("evaluate", help="score a model a run or sweep logged to MLflow on its test split")
    evaluate.add_argument("--model", required=True, metavar="URI",
                          help="models:/<model id>, runs:/<run id>/model, models:/<name>/<version>, or a local model "
                               "folder")
    evaluate.add_argument("--config", default=None, metavar="FILE",
                          help="run configuration (default: the config.yaml saved with the model)")
    evaluate.add_argument("--split", default="test", choices=["val", "test"],
                          help="which split to score (default test)")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a config key, e.g. --set data.root=/data/pets (repeatable)")
    evaluate.add_argument("--mlflow-uri", default=None, metavar="URI",
                          help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")

    ui = sub.add_parser("ui", help="the MLflow UI on the store distmtl writes to; prints the latest sweep's URL")
    ui.add_argument("--mlflow-uri", default=None, metavar="URI",
                    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")

    mlflow = sub.add_parser("mlflow", help="MLflow tools")
    mlflow_sub = mlflow.add_subparsers(dest="mlflow_command", required=True)
    replay = mlflow_sub.add_parser("replay", help="write the records kept while MLflow was unreachable")
    replay.add_argument("journal", metavar="FILE", help="a journal named in the warning (mlflow-journal/*.jsonl)")
    replay.add_argument("--mlflow-uri", default=None, metavar="URI",
                        help="where to write them (default: the tracking URI they were meant for)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    configure_logging(logging.WARNING if args.quiet else logging.INFO)
    try:
        return _COMMANDS[args.command](args)
    except DistmtlError as exc:
        print(f"distmtl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as exc:
        print(f"distmtl: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ndistmtl: interrupted" + (f"; continue the sweep with:\n  {_resume_command(argv)}"
                                          if args.command == "tune" else ""), file=sys.stderr)
        return EXIT_INTERRUPTED


def _resume_command(argv: list[str]) -> str:
    """The command line that continues this sweep."""
    return shlex.join(["distmtl", *argv, *([] if "--resume" in argv else ["--resume"])])


def _worker_count(text: str) -> int | tuple[int, int]:
    """``N`` or ``MIN-MAX`` (an elastic range) for ``--workers``."""
    low, _, high = text.partition("-")
    try:
        counts = (int(low), int(high)) if high else (int(low), int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX (got {text!r})") from None
    if counts[0] < 1 or counts[1] < counts[0]:
        raise argparse.ArgumentTypeError(f"need 1 <= MIN <= MAX (got {text!r})")
    return counts if high else counts[0]


def _overrides(args: argparse.Namespace) -> dict:
    """``--set`` pairs, plus the flags that stand for config keys."""
    from distmtl.config import parse_set_args

    overrides = parse_set_args(args.overrides)
    if args.max_failures is not None:
        _positive(args.max_failures, "--max-failures", allow_zero=True)
        overrides["train.max_failures"] = args.max_failures
    return overrides


def _positive(value: float | None, flag: str, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise DistmtlError(f"{flag} must be {'>= 0' if allow_zero else '> 0'} (got {value:g})")


def _train(args: argparse.Namespace) -> int:
    from distmtl.config import load_config
    from distmtl.data.sources import check_source_files
    from distmtl.engine.assembly import check_config
    from distmtl.launch.preflight import check_resume
    from distmtl.tracking import default_tracking_uri
    from distmtl.tracking.probe import check_tracking_store

    _positive(args.gpus_per_worker, "--gpus-per-worker", allow_zero=True)
    _positive(args.cpus_per_worker, "--cpus-per-worker")
    config = load_config(args.config, _overrides(args))
    check_config(config)
    if args.cv is not None and args.cv < 3:
        raise DistmtlError(f"--cv needs at least 3 folds (test, validation and training; got {args.cv})")
    if args.cv and args.resume:
        raise DistmtlError("--cv and --resume cannot be combined (resume one fold's run without --cv)")
    if args.resume:
        check_resume(args.resume)
    check_source_files(config.data)
    check_tracking_store(args.mlflow_uri or default_tracking_uri())
    from distmtl.launch.cluster import resolve_storage
    from distmtl.launch.run import train_on_ray

    stem = Path(args.config).stem
    metrics = train_on_ray(
        config,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker or 0.0,
        cpus=args.cpus_per_worker,
        storage_path=resolve_storage(args.storage),
        name=args.name or f"{stem}-{datetime.now():%Y%m%d-%H%M%S}",
        tracking_uri=args.mlflow_uri or default_tracking_uri(),
        experiment=args.experiment or stem,
        resume_from=str(Path(args.resume).resolve()) if args.resume else None,
        address=args.address,
        cv_folds=args.cv,
    )
    if args.cv:
        from distmtl.launch.cross_validation import format_summary

        print(format_summary(metrics, args.cv))
    else:
        print(_format_metrics("final metrics (test at the best validation epoch)", metrics))
    return 0


def _tune(args: argparse.Namespace) -> int:
    from distmtl.tune.space import Space

    for flag in ("num_samples", "workers_per_trial", "max_concurrent", "cpus_per_worker"):
        _positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    _positive(args.gpus_per_worker, "--gpus-per-worker", allow_zero=True)
    space = Space(args.space, _overrides(args))
    if args.register and space.pareto:
        raise DistmtlError("--register: a Pareto sweep has no single best model; register a front member's "
                           "runs:/<run id>/model with MLflow")
    if args.dry_run:
        print(space.describe())
        return 0
    from distmtl.tracking import default_tracking_uri
    from distmtl.tracking.probe import check_tracking_store
    from distmtl.tune.runner import SweepOptions, run_sweep

    check_tracking_store(args.mlflow_uri or default_tracking_uri())

    started = time.perf_counter()
    result = run_sweep(space, SweepOptions(
        num_samples=args.num_samples, workers_per_trial=args.workers_per_trial, gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker, max_concurrent=args.max_concurrent, experiment=args.experiment,
        storage=args.storage, mlflow_uri=args.mlflow_uri, address=args.address, resume=args.resume,
        verbose=args.verbose,
    ))
    elapsed = time.perf_counter() - started
    outcome = result.outcome
    print(f"\nsweep '{result.experiment}': {len(outcome.trials)} trial(s) in {elapsed:.1f} s; results in "
          f"{result.storage_path}/{result.experiment}")
    if outcome.failed:
        print(f"{len(outcome.failed)} trial(s) failed:")
        for trial_id, reason in outcome.failed.items():
            print(f"  {trial_id}: {reason}")
    if outcome.ranking:
        print(_ranking_table(outcome.ranking, f"best {space.tune_metric} ({space.mode})"))
    if outcome.best is not None:
        print(f"best trial {outcome.best.trial_id} ({space.tune_metric}, {space.mode}):")
        for key, value in outcome.best.searched.items():
            print(f"  {key} = {value}")
        print(_format_metrics("its last report (val/: last epoch; best/: best epoch; test/: at the best epoch)",
                              outcome.best.last))
        if args.register:
            from distmtl.tracking.model_export import register_trial_model

            uri = args.mlflow_uri or default_tracking_uri()
            model_uri, version = register_trial_model(uri, result.experiment, outcome.best.trial_id, args.register)
            print(f"registered {model_uri} as model '{args.register}' version {version}; score it again with:\n"
                  f"  distmtl evaluate --model models:/{args.register}/{version} --mlflow-uri {uri}")
    if outcome.front:
        print(_pareto_table(outcome.front, space.metrics, space.modes))
    if outcome.hypervolume is not None:
        from distmtl.tune.hypervolume import describe_hypervolume

        print(describe_hypervolume(*outcome.hypervolume, space.metrics, space.file.reference_point is not None))
    if outcome.interrupted:
        print(f"sweep interrupted before its end; continue it with:\n  {_resume_command(args.argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.best is None and not outcome.front:
        print("distmtl: error: no trial finished", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _affinity(args: argparse.Namespace) -> int:
    import json

    from distmtl.config import apply_overrides, load_yaml
    from distmtl.data.sources import check_source_files
    from distmtl.launch.affinity import plan, summary
    from distmtl.tracking import default_tracking_uri
    from distmtl.tracking.probe import check_tracking_store

    _positive(args.gpus_per_worker, "--gpus-per-worker", allow_zero=True)
    _positive(args.cpus_per_worker, "--cpus-per-worker")
    _positive(args.workers, "--workers")
    data = apply_overrides(load_yaml(args.config), _overrides(args))
    chosen = plan(data, args.budget, args.epochs, args.every, args.config, args.on)
    check_source_files(chosen.config.data)
    check_tracking_store(args.mlflow_uri or default_tracking_uri())
    from distmtl.launch.cluster import resolve_storage
    from distmtl.launch.run import train_on_ray

    stem = Path(args.config).stem
    metrics = train_on_ray(chosen.config, workers=args.workers, gpus_per_worker=args.gpus_per_worker or 0.0,
                           cpus=args.cpus_per_worker, storage_path=resolve_storage(args.storage),
                           name=args.name or f"{stem}-affinity-{datetime.now():%Y%m%d-%H%M%S}",
                           tracking_uri=args.mlflow_uri or default_tracking_uri(), experiment=args.experiment or stem,
                           address=args.address)
    report, result = summary(chosen, metrics, args.signal)
    print(report)
    print(json.dumps(result))
    return 0


def _pareto_table(front: list, metrics: list[str], modes: list[str]) -> str:
    """The Pareto front as a console table: one row per trial, its last-epoch objectives and searched values."""
    from distmtl.tune.outcome import short_value

    keys = sorted({k for member in front for k in member.searched})
    header = ["trial", *(f"{m} ({d})" for m, d in zip(metrics, modes)), *keys]
    rows = [[t.trial_id, *(f"{v:.4g}" for v in t.values(metrics)), *(short_value(t.searched.get(k, "")) for k in keys)]
            for t in sorted(front, key=lambda t: t.values(metrics)[0])]
    return _table(f"Pareto front: {len(front)} trial(s) that no other finished trial beats on every metric",
                  header, rows)


def _ranking_table(ranking: list, score: str) -> str:
    """The scored trials, best first: rank, trial, epochs run, best score, searched values."""
    from distmtl.tune.outcome import short_value

    keys = sorted({k for trial in ranking for k in trial.searched})
    rows = [[str(i), t.trial_id, str(t.epochs), f"{t.score:.4g}", *(short_value(t.searched.get(k, "")) for k in keys)]
            for i, t in enumerate(ranking, 1)]
    return _table("trials, best first:", ["#", "trial", "epochs", score, *keys], rows)


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """``title``, then the table indented, its columns aligned (cells as written)."""
    from tabulate import tabulate

    table = tabulate([header, *rows], tablefmt="plain", disable_numparse=True)  # the header as a row: no extra padding
    return "\n".join([title] + ["  " + line.rstrip() for line in table.splitlines()])


def _recipe(args: argparse.Namespace) -> int:
    from distmtl.config import parse_set_args
    from distmtl.recipes import RECIPES, RecipeOptions, run_recipe
    from distmtl.tracking import default_tracking_uri
    from distmtl.tracking.probe import check_tracking_store

    if args.list:
        for name in RECIPES:
            recipe = RECIPES.get(name)
            print(f"{name:<18} {recipe.description} (default {recipe.default_seeds} seeds)")
        return 0
    if not args.name:
        raise DistmtlError(f"recipe: name one of {', '.join(RECIPES)} (or --list)")
    recipe = RECIPES.get(args.name)
    _positive(args.seeds, "--seeds")
    _positive(args.first_seed, "--first-seed", allow_zero=True)
    overrides = parse_set_args(args.overrides)
    if args.device:
        overrides["train.device"] = args.device
    uri = args.mlflow_uri or default_tracking_uri()
    check_tracking_store(uri)
    result = run_recipe(recipe, RecipeOptions(args.quick, args.seeds, overrides, args.root, args.first_seed), uri,
                        args.experiment or recipe.name, shlex.join(["distmtl", *args.argv]))
    print("\n" + result.markdown)
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from distmtl.config import load_config, parse_set_args
    from distmtl.engine.assembly import check_config
    from distmtl.evaluation.transfer import transfer_baseline
    from distmtl.tracking import MlflowRun, default_tracking_uri

    if args.single_task:
        return _single_task_baseline(args)
    if not (args.classify and args.map):
        raise DistmtlError("baseline: give --single-task (single-task networks for Δm), or --classify TASK and "
                           "--map TASK (the transfer-learning baseline)")
    config = load_config(args.config, parse_set_args(args.overrides))
    check_config(config)
    result = transfer_baseline(config, args.classify, args.map)
    with MlflowRun(args.mlflow_uri or default_tracking_uri(), args.experiment or Path(args.config).stem,
                   f"transfer-baseline-{args.classify}-{args.map}", config.model_dump(), command="baseline") as run:
        run.log_metrics(result, step=config.optim.epochs - 1)
    print(f"transfer baseline: '{args.classify}' classifier frozen, ridge (alpha {result['transfer/ridge_alpha']:g}) "
          f"to '{args.map}':")
    for key in sorted(k for k in result if k.startswith(("test/", "transfer/test/"))):
        print(f"  {key:<36} {result[key]:.4f}")
    return 0


def _single_task_baseline(args: argparse.Namespace) -> int:
    from distmtl.config import parse_set_args
    from distmtl.recipes.single_task import run_single_task_baseline
    from distmtl.tracking import default_tracking_uri

    if not args.out:
        raise DistmtlError("baseline --single-task: give --out FILE, the baseline file to write (e.g. baseline.json)")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise DistmtlError(f"--out {out} exists; pass --force to replace it, or choose another file")
    if not out.parent.is_dir():
        raise DistmtlError(f"--out {out}: no directory {out.parent}; create it first")
    if args.seeds < 1:
        raise DistmtlError(f"--seeds must be at least 1 (got {args.seeds})")
    baseline = run_single_task_baseline(args.config, parse_set_args(args.overrides), args.seeds, out,
                                        args.mlflow_uri or default_tracking_uri(),
                                        args.experiment or Path(args.config).stem,
                                        shlex.join(["distmtl", *args.argv]))
    print(f"single-task baseline ({args.seeds} seed(s) per task) written to {out}:")
    for task, result in baseline.tasks.items():
        print(f"  {task:<16} {result.metric:<18} val {result.val:.4f}  test {result.test:.4f}")
    print(f"use it with: --set train.baseline={out.resolve()}  (then rank a sweep by val/delta_m)")
    return 0


def _data(args: argparse.Namespace) -> int:
    from distmtl.config import config_from_dict, load_yaml
    from distmtl.data.hdf5_store import write_store
    from distmtl.data.sources import build_source

    data = load_yaml(args.config).get("data", {}) if args.config else {"source": args.source}
    given = {"root": args.root, "image_size": args.image_size, "num_samples": args.num_samples, "seed": args.seed}
    data.update({k: v for k, v in given.items() if v is not None})
    config = config_from_dict({"tasks": ["_"], "data": data}, source=args.config or "data convert").data
    out = Path(args.out)
    if out.suffix not in (".h5", ".hdf5"):
        raise DistmtlError(f"--out {out}: name the file *.h5")
    if out.exists() and not args.force:
        raise DistmtlError(f"--out {out} exists; pass --force to replace it, or choose another file")
    started = time.perf_counter()
    samples = build_source(config)
    write_store(samples, out, source=config.source, chunk=args.chunk, compression=args.compression)
    size = out.stat().st_size / 2**20
    print(f"wrote {len(samples)} samples of {config.source} ({'×'.join(map(str, samples.image_shape))}, "
          f"tasks: {', '.join(samples.specs)}) to {out}: {size:.1f} MiB in {time.perf_counter() - started:.1f} s")
    return 0


def _mlflow(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from distmtl.tracking.fallback import journal_uri, replay

    journal = Path(args.journal)
    if not journal.is_file():
        raise DistmtlError(f"{journal}: no such journal (the warning that MLflow was unreachable names it)")
    uri = args.mlflow_uri or journal_uri(journal)
    done, left = replay(journal, MlflowClient(uri))
    if left:
        raise RunFailed(f"MLflow at {uri} failed after {done} record(s); {left} left in {journal} (run this again)")
    print(f"wrote {done} record(s) from {journal} to MLflow at {uri}")
    return 0


def _format_metrics(title: str, metrics: dict) -> str:
    keys = sorted(k for k in metrics if k.startswith(("best/", "val/", "test/", "cv/")) or k in ("best_epoch", "epoch"))
    lines = [f"{title}:"]
    lines += [f"  {k:<28} {metrics[k]:.4f}" if isinstance(metrics[k], float) else f"  {k:<28} {metrics[k]}"
              for k in keys]
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from distmtl.config import load_config, parse_set_args
    from distmtl.engine import LocalReporter, Trainer
    from distmtl.engine.assembly import check_config
    from distmtl.tracking import default_tracking_uri
    from distmtl.tracking.model_export import CONFIG_FILE, download_model, load_model

    if ":/" not in args.model and not Path(args.model).is_dir():
        raise DistmtlError(f"--model {args.model}: no such model folder; give models:/<model id>, runs:/<run id>/"
                           "model, models:/<name>/<version>, or the folder of a saved model")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="distmtl-model-") as scratch:
        try:
            local = download_model(args.model, scratch, args.mlflow_uri or default_tracking_uri())
        except (MlflowException, OSError) as exc:
            raise DistmtlError(f"--model {args.model}: not found ({str(exc).splitlines()[0]}); "
                               "give models:/<model id>, "
                               "runs:/<run id>/model of a run that finished, models:/<name>/<version>, or a model "
                               "folder") from None
        config_path = Path(args.config) if args.config else local / CONFIG_FILE
        if not config_path.is_file():
            raise DistmtlError(f"--model {args.model} carries no {CONFIG_FILE}; give --config FILE")
        config = load_config(config_path, parse_set_args(args.overrides))
        check_config(config)
        model = load_model(str(local))
    scored = Trainer(config, LocalReporter()).score(model, args.split)
    source = args.config or "the config saved with it"
    print(_format_metrics(f"{args.model} on the {args.split} split of {source}", scored))
    return 0


def _ui(args: argparse.Namespace) -> int:
    import subprocess

    from distmtl.tracking import default_tracking_uri
    from distmtl.tracking.probe import check_tracking_store
    from distmtl.tracking.ui import is_server, latest_sweep_path, ui_command

    uri = args.mlflow_uri or default_tracking_uri()
    if is_server(uri):  # an MLflow server serves its own UI
        check_tracking_store(uri)
        print(f"MLflow UI: {uri.rstrip('/')}/{latest_sweep_path(uri) or ''}", flush=True)
        return 0
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise DistmtlError(f"--mlflow-uri: no MLflow store at {uri.removeprefix('sqlite:///')}; run a sweep first "
                           "(make demo) or point --mlflow-uri / MLFLOW_TRACKING_URI at your store")
    print(f"MLflow UI for {uri}: http://{args.host}:{args.port}/{latest_sweep_path(uri) or ''}  (Ctrl-C stops it)",
          flush=True)
    try:
        return subprocess.run(ui_command(uri, args.host, args.port)).returncode
    except KeyboardInterrupt:
        return 0


_COMMANDS = {"train": _train, "tune": _tune, "affinity": _affinity, "recipe": _recipe, "baseline": _baseline,
             "data": _data, "mlflow": _mlflow,
             "evaluate": _evaluate, "ui": _ui}
