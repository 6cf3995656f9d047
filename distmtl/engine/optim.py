"""Optimizer construction from the config."""

from __future__ import annotations

import torch
from torch import nn

from distmtl.config.schema import OptimConfig


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (weight decay as an L2 term in the gradient) or AdamW (decoupled weight decay)."""
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
