"""Assembly: a config → the parts of a run (target specs, tasks, model, weighting, selection direction).

The one place where config, data, tasks, models and weighting meet. The CLI and the search space call
:func:`check_config` once before anything starts; each engine worker calls :func:`build_parts` once.
``aux_transfer``'s frozen encoders are loaded here, from the checkpoints the config names, and handed
to the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from distmtl.config.schema import Config
from distmtl.data.sources import check_targets
from distmtl.engine.checkpoint import load_checkpoint
from distmtl.engine.structure import CONTROLLERS
from distmtl.errors import ConfigError
from distmtl.models import MultiTaskModel, build_model
from distmtl.models.encoders import Encoder
from distmtl.tasks import Task, build_tasks, selectable_metrics
from distmtl.tasks.baseline import Baseline
from distmtl.weighting import Weighting, build_weighting


@dataclass
class Parts:
    """What a run trains: its tasks, model and weighting, and whether its selection metric is minimised or maximised."""

    tasks: dict[str, Task]
    model: MultiTaskModel
    weighting: Weighting
    selection_mode: str
    metrics: dict[str, str]
    baseline: Baseline | None


def build_parts(config: Config, in_channels: int) -> Parts:
    """Build tasks, model and weighting for ``config`` on images with ``in_channels`` channels (no data is loaded)."""
    tasks = build_tasks(config.tasks, check_targets(config.data, config.tasks))
    checkpoints = getattr(config.model, "aux_checkpoints", [])
    inputs = {"frozen_encoders": frozen_encoders(checkpoints, in_channels)} if checkpoints else {}
    model = build_model(config.model, tasks, in_channels, **inputs)
    weighting = build_weighting(config.weighting, config.tasks)
    if weighting.reduces_gradients and config.model.architecture in CONTROLLERS:
        raise ConfigError(f"weighting.method: '{config.weighting.method}' aggregates task gradients "
                          "over a fixed set of shared parameters, and model.architecture "
                          f"'{config.model.architecture}' changes that set during training; "
                          "choose a loss-level method (e.g. fixed, dwa, famo) or another architecture")
    weighting.check(model, (in_channels, config.data.image_size, config.data.image_size))
    path = config.train.baseline
    baseline = Baseline.load(path).for_tasks(tasks, path) if path else None
    metrics = selectable_metrics(tasks, delta_m=baseline is not None)
    selection = config.train.selection_metric
    if selection not in metrics:
        raise ConfigError(f"train.selection_metric: '{selection}' is not reported by these tasks "
                          f"(choose one of: {', '.join(metrics)})"
                          + ("; val/delta_m needs train.baseline" if selection == "val/delta_m" else ""))
    return Parts(tasks, model, weighting, config.train.selection_mode or metrics[selection], metrics, baseline)


def check_config(config: Config) -> None:
    """Raise :class:`ConfigError` for the first name in ``config`` that nothing registered answers to, or for
    parts that do not fit together — in a second, before data is built or Ray is started."""
    build_parts(config, in_channels=3)


def frozen_encoders(directories: list[str], in_channels: int) -> list[Encoder]:
    """The encoders of the hard-sharing runs whose checkpoints are in ``directories`` (best-epoch weights), frozen."""
    encoders = []
    for directory in directories:
        state = load_checkpoint(directory)
        config = Config.model_validate(state.config)
        if config.model.architecture != "hard_sharing":
            raise ConfigError(f"model.aux_checkpoints: {directory} holds a {config.model.architecture} model; "
                              "auxiliary encoders come from hard_sharing runs")
        tasks = build_tasks(config.tasks, check_targets(config.data, config.tasks))
        model = build_model(config.model, tasks, in_channels)
        model.load_state_dict(state.best.state or state.model)
        encoders.append(_frozen(model.encoder))
    return encoders


def _frozen(encoder: nn.Module) -> Encoder:
    encoder.requires_grad_(False)
    return encoder.eval()
