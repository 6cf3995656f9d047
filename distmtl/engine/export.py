"""The best-epoch model of a checkpoint, rebuilt without the run's data — the one way distmtl exports a run's
model: into its MLflow run as the logged model, for ``distmtl evaluate``, and for the recipes' own measures."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from distmtl.config.schema import Config
from distmtl.engine.assembly import build_parts
from distmtl.engine.checkpoint import TrainingState
from distmtl.errors import DistmtlError
from distmtl.models import MultiTaskModel
from distmtl.tracking.model_export import MODEL_NAME, save_model

if TYPE_CHECKING:
    from distmtl.tracking.mlflow_run import MlflowRun

log = logging.getLogger("distmtl")


def best_model(checkpoint_dir: str | Path) -> tuple[MultiTaskModel, tuple[int, ...], TrainingState]:
    """(the model with the checkpoint's best-epoch structure and weights on the CPU in eval mode, the image shape
    it reads, the state)."""
    state = TrainingState.load(checkpoint_dir)
    if not state.image_shape or state.best.state is None:
        raise DistmtlError(f"checkpoint {checkpoint_dir} holds no best-epoch model to export")
    model = build_parts(Config.model_validate(state.config), state.image_shape[0]).model
    model.restore_structure(state.best.structure or {})
    model.load_state_dict(state.best.state)
    return model.cpu().eval(), tuple(state.image_shape), state


def log_best_model(run: MlflowRun, checkpoint_dir: str | Path) -> bool:
    """Log the best-epoch model of a run's last checkpoint into ``run`` as its MLflow logged model ``model``
    (with the config that rebuilds its data), after the run's last epoch is logged. Every command ends a
    trained run this way, whether it ran all its epochs or a scheduler stopped it. Returns whether a model was
    logged (a checkpoint without a best epoch has none: that is said, and the run goes on)."""
    try:
        model, image_shape, state = best_model(checkpoint_dir)
    except DistmtlError as exc:
        log.warning("MLflow run %s: no model logged (%s)", run.real_run_id, exc)
        return False
    with tempfile.TemporaryDirectory(prefix="distmtl-model-") as scratch:
        folder = Path(scratch) / MODEL_NAME
        save_model(model, image_shape, state.config, folder)
        run.log_model(folder, MODEL_NAME)
    return True
