"""The search-space file: base config, searched parameters with distributions, metric, searcher, scheduler.

Example::

    base: configs/joint_mapping.yaml      # relative to this file
    metric: val/loss                      # mode defaults to the metric's natural direction
    cv: 5                                 # optional: score = mean best-epoch metric over 5 folds
    num_samples: 20
    searcher: {name: optuna, sampler: tpe, seed: 0}
    scheduler: {name: asha, grace_period: 2, reduction_factor: 2}
    resources: {workers_per_trial: 2, gpus_per_worker: 0}
    parameters:
      weighting.weights.shape: {type: choice, values: [0.0625, 0.125, 0.25, 0.5, 1.0, 2.0]}
      optim.weight_decay: {type: loguniform, low: 1.0e-6, high: 1.0e-2}

Several metrics (``metric: [val/fine/accuracy, val/shape/r2]``, ``mode`` a list or left to each metric's
direction) make a Pareto sweep: Optuna's multi-objective sampler (TPE or NSGA-II), each trial scored by its last
epoch's values, and the sweep ends with the trials no other finished trial dominates. Its scheduler is
multi-objective ASHA (:mod:`distmtl.tune.moasha`) whether the space says ``scheduler: {name: asha}`` (the
default: successive halving, ranking by every metric) or ``moasha``; ``fifo`` runs every trial to its last
epoch. ``moasha`` with one metric is refused. ``reference_point`` (one value per metric) fixes the point the
front's hypervolume is measured from; without it the point is derived (:mod:`distmtl.tune.hypervolume`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distmtl.config import Config, apply_overrides, config_from_dict, load_yaml
from distmtl.config.loading import describe_error
from distmtl.data.sources import check_source_files
from distmtl.engine.assembly import build_parts, check_config
from distmtl.errors import ConfigError

_UNSET = object()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Parameter(_Strict):
    """One searched parameter: ``uniform``/``loguniform`` over [low, high], ``randint`` over the integers
    low..high inclusive, or ``choice`` among ``values``; with ``when``, sampled only in trials where each named
    choice parameter (listed earlier in the file) took one of the given values — the settings of one method among
    several, e.g. ``weighting.c: {type: uniform, low: 0.1, high: 0.9, when: {weighting.method: cagrad}}``."""

    type: Literal["uniform", "loguniform", "randint", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None
    when: dict[str, Any] | None = None

    def condition(self) -> dict[str, list[Any]]:
        """``when`` with every value as a list."""
        return {key: value if isinstance(value, list) else [value] for key, value in (self.when or {}).items()}

    def applies(self, sampled: dict[str, Any]) -> bool:
        """Whether a trial that sampled ``sampled`` (so far) samples this parameter."""
        return all(sampled.get(key, _UNSET) in values for key, values in self.condition().items())

    def suggest(self, trial: Any, key: str) -> Any:
        """The value an Optuna trial suggests for ``key``."""
        if self.type == "choice":
            return trial.suggest_categorical(key, self.values)
        if self.type == "randint":
            return trial.suggest_int(key, int(self.low), int(self.high))
        return trial.suggest_float(key, self.low, self.high, log=self.type == "loguniform")

    @model_validator(mode="after")
    def _consistent(self) -> Parameter:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty 'values' list")
            if self.low is not None or self.high is not None:
                raise ValueError("a choice takes 'values', not low/high")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        if self.values is not None:
            raise ValueError(f"a {self.type} parameter takes low/high, not 'values'")
        if self.low >= self.high:
            raise ValueError(f"low must be < high (got low={self.low}, high={self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0 (got {self.low})")
        if self.type == "randint" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"randint needs integer bounds (got {self.low}, {self.high})")
        return self

    def endpoints(self) -> list[tuple[str, Any]]:
        """The values that bound the parameter's range (every value of a choice), named for error messages:
        if each is valid for its key, every sample is."""
        if self.type == "choice":
            return [(f"values[{i}]", v) for i, v in enumerate(self.values)]
        if self.type == "randint":
            return [("low", int(self.low)), ("high", int(self.high))]
        return [("low", self.low), ("high", self.high)]

    def describe(self) -> str:
        shown = f"choice {self.values}" if self.type == "choice" else f"{self.type} [{self.low:g}, {self.high:g}]"
        when = " and ".join(f"{k} in {v}" if len(v) > 1 else f"{k} = {v[0]}" for k, v in self.condition().items())
        return shown + (f"  (when {when})" if when else "")


class DefineByRun:
    """The parameters as Optuna's define-by-run search space, in file order: a conditional parameter is suggested
    only when its condition holds (Ray Tune's OptunaSearch calls it for every trial; it is pickled with the sweep)."""

    def __init__(self, parameters: dict[str, Parameter]) -> None:
        self.parameters = parameters

    def __call__(self, trial: Any) -> None:
        sampled: dict[str, Any] = {}
        for key, parameter in self.parameters.items():
            if parameter.applies(sampled):
                sampled[key] = parameter.suggest(trial, key)


class Searcher(_Strict):
    name: Literal["optuna"] = "optuna"
    sampler: Literal["tpe", "random", "nsga2"] = Field("tpe", description="nsga2: NSGA-II, for Pareto sweeps.")
    seed: int = 0
    storage: str | None = Field(None, description="Optuna RDB URL (e.g. sqlite:///optuna.db) to persist the study.")


class Scheduler(_Strict):
    name: Literal["asha", "moasha", "fifo"] = Field(
        "asha", description="asha: successive halving (multi-objective with several metrics); moasha: say so "
                            "explicitly (several metrics only); fifo: every trial runs all its epochs.")
    grace_period: int = Field(1, gt=0)
    reduction_factor: float = Field(2.0, gt=1)


class TrialResources(_Strict):
    workers_per_trial: int = Field(2, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    cpus_per_worker: float | None = Field(None, gt=0, description="None: 1, shrunk to fit a small machine.")


class SpaceFile(_Strict):
    """The whole search-space file."""

    base: str
    metric: str | list[str] = Field("val/loss", description="A metric, or several for a Pareto sweep.")
    mode: Literal["min", "max"] | list[Literal["min", "max"]] | None = None
    num_samples: int = Field(10, gt=0)
    max_concurrent: int | None = Field(None, gt=0)
    cv: int | None = Field(None, ge=3, description="Score each trial by K-fold cross-validation (mean over folds).")
    searcher: Searcher = Field(default_factory=Searcher)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    resources: TrialResources = Field(default_factory=TrialResources)
    reference_point: list[float] | None = Field(
        None, description="Pareto sweeps: where the front's hypervolume is measured from, one value per metric; "
                          "left out: derived from the finished trials.")
    parameters: dict[str, Parameter] = Field(min_length=1)


class Space:
    """A loaded, validated space: the base config as a dict, the parsed file, and derived facts."""

    def __init__(self, path: str | Path, overrides: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        raw = load_yaml(self.path, what="search-space")
        try:
            self.file = SpaceFile.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{self.path}: {describe_error(exc.errors()[0], SpaceFile)}") from None
        self.base_path = (self.path.parent / self.file.base).resolve()
        self.base = apply_overrides(load_yaml(self.base_path), overrides or {})
        self.base_config = config_from_dict(self.base, source=str(self.base_path))
        parts = build_parts(self.base_config, in_channels=3)  # also checks every name in the base config
        check_source_files(self.base_config.data)
        self._check_conditions()
        for key, parameter in self.file.parameters.items():
            chosen = {k: values[0] for k, values in parameter.condition().items()}  # a trial in which it applies
            for bound, value in parameter.endpoints():
                where = f"{self.path}: parameters.{key}.{bound}"
                try:
                    check_config(config_from_dict(apply_overrides(self.base, {**chosen, key: value}), source=where))
                except ConfigError as exc:
                    raise ConfigError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
        self.metrics, self.modes = self._objectives(parts.metrics)
        self.metric, self.mode = self.metrics[0], self.modes[0]
        # With cross-validation a trial reports once: the folds' mean of their best-epoch metric.
        self.tune_metric = f"cv/best/{self.metric}" if self.file.cv else self.metric

    def _check_conditions(self) -> None:
        """Each ``when`` names choice parameters listed before it, and values they can take."""
        earlier: dict[str, Parameter] = {}
        for key, parameter in self.file.parameters.items():
            for name, values in parameter.condition().items():
                where = f"{self.path}: parameters.{key}.when.{name}"
                if name not in earlier or earlier[name].type != "choice":
                    choices = ", ".join(k for k, p in earlier.items() if p.type == "choice")
                    raise ConfigError(f"{where}: a condition names a choice parameter listed before this one "
                                      f"(choices before it: {choices or 'none'})")
                unknown = [v for v in values if v not in earlier[name].values]
                if unknown:
                    raise ConfigError(f"{where}: {unknown} are not among {name}'s values {earlier[name].values}")
            earlier[key] = parameter

    def _objectives(self, reported: dict[str, str]) -> tuple[list[str], list[str]]:
        """The metrics to optimise and their directions, each checked against what the base config reports."""
        metrics = [self.file.metric] if isinstance(self.file.metric, str) else list(self.file.metric)
        modes = self.file.mode
        if not metrics or len(set(metrics)) < len(metrics):
            raise ConfigError(f"{self.path}: metric: name one metric, or several different ones (got {metrics})")
        if isinstance(modes, list) and len(modes) != len(metrics):
            raise ConfigError(f"{self.path}: mode: {len(modes)} mode(s) for {len(metrics)} metric(s); give one per "
                              "metric, or leave mode out to use each metric's natural direction")
        if len(metrics) > 1 and self.file.cv:
            raise ConfigError(f"{self.path}: cv: a Pareto sweep (several metrics) cannot be cross-validated yet; "
                              "give one metric, or drop cv")
        if len(metrics) == 1 and self.file.scheduler.name == "moasha":
            raise ConfigError(f"{self.path}: scheduler.name: moasha ranks several metrics and this space has one "
                              f"({metrics[0]}); use asha, or list several metrics")
        reference = self.file.reference_point
        if reference is not None and len(metrics) == 1:
            raise ConfigError(f"{self.path}: reference_point: only a Pareto sweep (several metrics) has a hypervolume; "
                              "drop reference_point, or list several metrics")
        if reference is not None and len(reference) != len(metrics):
            raise ConfigError(f"{self.path}: reference_point: {len(reference)} value(s) for {len(metrics)} metrics; "
                              "give one per metric, in the metric's units, or leave it out to derive it")
        weights = [key for key in self.file.parameters if key.startswith("weighting.weights.")]
        for metric in metrics:
            if metric not in reported:
                raise ConfigError(
                    f"{self.path}: metric '{metric}' is not reported by tasks {self.base_config.tasks} "
                    f"(choose one of: {', '.join(reported)})"
                    + ("; val/delta_m needs train.baseline in the base config" if metric == "val/delta_m" else ""))
            if metric == "val/loss" and weights:
                raise ConfigError(
                    f"{self.path}: metric 'val/loss' is the loss weighted by the searched {', '.join(weights)}, so "
                    "smaller weights score better by construction; rank by a metric no searched parameter scales: "
                    f"val/loss_unweighted or a task's own (e.g. {_task_metric(reported)})")
        if isinstance(modes, list):
            return metrics, list(modes)
        return metrics, [modes or reported[m] for m in metrics]

    @property
    def pareto(self) -> bool:
        """Whether the sweep optimises several metrics at once."""
        return len(self.metrics) > 1

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric as Tune sees it, mode) for every optimised metric."""
        return [(self.tune_metric, self.mode)] if not self.pareto else list(zip(self.metrics, self.modes))

    @property
    def scheduler_name(self) -> str:
        """The scheduler that runs: a cross-validated trial reports once, so FIFO; successive halving over several
        metrics is multi-objective ASHA (``moasha``), whether the space says ``asha`` or ``moasha``."""
        if self.file.cv:
            return "fifo"
        name = self.file.scheduler.name
        return "moasha" if self.pareto and name == "asha" else name

    @property
    def stops_early(self) -> bool:
        """Whether the scheduler may end a trial before its last epoch."""
        return self.scheduler_name != "fifo"

    def search_space(self) -> DefineByRun:
        """The parameters as the searcher's define-by-run space (the Tuner's ``param_space`` then stays empty)."""
        return DefineByRun(self.file.parameters)

    def trial_config(self, sampled: dict[str, Any]) -> Config:
        """The full config of a trial: the base with the sampled values applied (and, under
        cross-validation, the space's metric as the folds' best-epoch selection metric)."""
        fixed = {"train.selection_metric": self.metric, "train.selection_mode": self.mode} if self.file.cv else {}
        return config_from_dict(apply_overrides(self.base, {**sampled, **fixed}),
                                source=f"trial config from {self.path}")

    def describe(self) -> str:
        """A human-readable summary of the resolved space (what ``--dry-run`` prints)."""
        f = self.file
        lines = [
            f"search space  {self.path}",
            f"base config   {self.base_path}",
            (f"metric        {self.tune_metric} ({self.mode})"
             + (f": mean over {f.cv}-fold cross-validation" if f.cv else "")) if not self.pareto else
            "metrics       " + ", ".join(f"{m} ({d})" for m, d in self.objectives)
            + ": Pareto sweep, last-epoch values",
            f"searcher      {f.searcher.name} ({f.searcher.sampler}, seed {f.searcher.seed})"
            + (f", study stored in {f.searcher.storage}" if f.searcher.storage else ""),
            f"scheduler     {self._describe_scheduler()}",
            f"trials        {f.num_samples}" + (f", at most {f.max_concurrent} at once" if f.max_concurrent else ""),
            f"per trial     {f.resources.workers_per_trial} worker(s), {f.resources.gpus_per_worker:g} GPU each",
            "parameters:",
        ]
        if self.pareto:
            lines.insert(3, "hypervolume   from " + (
                "reference point " + ", ".join(f"{m} {v:g}" for m, v in zip(self.metrics, f.reference_point))
                if f.reference_point is not None else
                "a reference point derived from the finished trials (each metric's worst value, 10% of their "
                "range beyond)"))
        width = max(map(len, f.parameters))
        lines += [f"  {key:<{width}}  {p.describe()}" for key, p in f.parameters.items()]
        return "\n".join(lines)

    def _describe_scheduler(self) -> str:
        """Which scheduler runs, with its rungs, and why where the space's word alone does not say it."""
        f, name = self.file, self.scheduler_name
        if name == "fifo":
            why = ("a cross-validated trial reports once" if f.cv else "as the space asks")
            return f"fifo (every trial runs all its epochs: {why})"
        rungs = (f"max_t {self.base_config.optim.epochs} epochs, grace {f.scheduler.grace_period}, "
                 f"reduction {f.scheduler.reduction_factor:g}")
        if name == "asha":
            return f"asha ({rungs})"
        return (f"moasha, multi-objective ASHA ({rungs}): at each rung the top 1/η by non-dominated sorting, "
                "ties within a front broken by crowding distance")


def _task_metric(metrics: dict[str, str]) -> str:
    """A task's own quality metric to suggest (its loss where it reports nothing else)."""
    own = [k for k in metrics if k.count("/") == 2]
    return next((k for k in own if not k.endswith("/loss")), own[0])
