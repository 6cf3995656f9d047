"""The best-epoch model of a checkpoint, rebuilt without the run's data (for MLflow and ``distmtl evaluate``)."""

from __future__ import annotations

from pathlib import Path

from distmtl.config.schema import Config
from distmtl.engine.assembly import build_parts
from distmtl.engine.checkpoint import TrainingState
from distmtl.errors import DistmtlError
from distmtl.models import MultiTaskModel


def best_model(checkpoint_dir: str | Path) -> tuple[MultiTaskModel, tuple[int, ...], TrainingState]:
    """(the model with the checkpoint's best-epoch weights, the image shape it reads, the state)."""
    state = TrainingState.load(checkpoint_dir)
    if not state.image_shape or state.best.state is None:
        raise DistmtlError(f"checkpoint {checkpoint_dir} holds no best-epoch model to export")
    model = build_parts(Config.model_validate(state.config), state.image_shape[0]).model
    model.restore_structure(state.best.structure or {})
    model.load_state_dict(state.best.state)
    return model.eval(), tuple(state.image_shape), state
