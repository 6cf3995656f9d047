"""One line per trial event on the driver's console, in place of Tune's full-width status table.

Tune's default output reprints a table of every trial several times a minute; a sweep's user wants to
know when a trial starts (with what), how it ended (finished, stopped early by the scheduler, failed and
why), each epoch's score, and its final score. The workers' own lines, Ray's notices and Tune's status
table (limited to the searched parameters and the metric, every minute: :func:`status_table`) appear with
``--verbose``.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback, CLIReporter

from distmtl.errors import FAILURE_KEY
from distmtl.tune.outcome import error_line, short_value
from distmtl.tune.reporting import EPOCHS_PLANNED
from distmtl.tune.space import Space

#: Seconds between two prints of Tune's status table (``--verbose``): a minute, against Tune's default 5 s.
STATUS_INTERVAL_S = 60


def status_table(space: Space, interval_s: int = STATUS_INTERVAL_S) -> CLIReporter:
    """Tune's status table for ``--verbose``: each trial's state, searched values and the sweep's metric(s)
    (last reported value) only, sorted by the metric where there is one, printed at most every ``interval_s``
    seconds. Tune gives it the metric, its mode and the number of trials when the sweep starts."""
    return CLIReporter(parameter_columns=list(space.file.parameters), metric_columns=list(space.metrics),
                       max_report_frequency=interval_s, max_column_length=24, sort_by_metric=not space.pareto,
                       print_intermediate_tables=True)  # not left to Tune's global verbosity, which sweeps set to 0


class ConsoleProgress(Callback):
    """Prints ``trial <id> started: …`` and ``trial <id> finished|stopped|failed …`` lines (k of N)."""

    def __init__(self, space: Space, num_samples: int) -> None:
        self.space = space
        self.num_samples = num_samples
        self.ended = 0

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        sampled = ", ".join(f"{k}={short_value(v)}" for k, v in trial.config.items() if k in self.space.file.parameters)
        print(f"trial {trial.trial_id} started: {sampled}", flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """``trial <id> epoch k/N  <metric> <value> (best <value>)``, one line per epoch."""
        if FAILURE_KEY in result or "epoch" not in result:
            return
        shown = []
        for metric, mode in self.space.objectives:
            value = result.get(metric)
            if not isinstance(value, (int, float)):
                continue
            earlier = (trial.metric_analysis.get(metric) or {}).get(mode)  # Tune adds this result after the callbacks
            best = value if not isinstance(earlier, (int, float)) else (min if mode == "min" else max)(earlier, value)
            shown.append(f"{metric} {value:.4g}" + ("" if self.space.pareto else f" (best {best:.4g})"))
        print(f"trial {trial.trial_id} epoch {int(result['epoch']) + 1}/{result[EPOCHS_PLANNED]}  {'  '.join(shown)}",
              flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if FAILURE_KEY in result:
            self._ended(trial, f"failed: {result[FAILURE_KEY]}")
            return
        epochs, planned = int(result.get("epoch", -1)) + 1, result.get(EPOCHS_PLANNED, 0)
        how = (f"stopped by {self.space.scheduler_name} after {epochs} of {planned} epochs"
               if 0 < epochs < planned and self.space.stops_early else f"finished ({epochs} epochs)")
        if self.space.pareto:
            score = "; last " + ", ".join(f"{m} {result[m]:.4g}" for m in self.space.metrics if m in result)
        else:
            metric, mode = self.space.tune_metric, self.space.mode
            best = (trial.metric_analysis.get(metric) or {}).get(mode)
            score = f"; best {metric} {best:.4g}" if isinstance(best, float) and math.isfinite(best) else ""
        self._ended(trial, how + score)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, f"failed: {error_line(trial)}")

    def _ended(self, trial: Any, what: str) -> None:
        self.ended += 1
        print(f"trial {trial.trial_id} {what} [{self.ended} of {self.num_samples} ended]", flush=True)

