"""Optimizer construction from the config."""

from __future__ import annotations

import torch
from torch import nn

from distmtl.config.schema import OptimConfig


def build_optimizer(cfg: OptimConfig, model: nn.Module, extra: list[nn.Parameter] | None = None) -> torch.optim.Optimizer:
    """Adam (weight decay as an L2 term in the gradient) or AdamW (decoupled weight decay); ``extra``
    parameters (a learned loss weighting's) form a second group without weight decay."""
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    groups = [{"params": list(model.parameters())}]
    if extra:
        groups.append({"params": list(extra), "weight_decay": 0.0})
    return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
