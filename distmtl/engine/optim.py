"""Optimizer construction from the config."""

from __future__ import annotations

import torch
from torch import nn

from distmtl.config.schema import OptimConfig
from distmtl.engine.schedule import BASE_LR
from distmtl.models.base import MultiTaskModel


def build_optimizer(cfg: OptimConfig, model: MultiTaskModel,
                    extra: list[nn.Parameter] | None = None) -> torch.optim.Optimizer:
    """Adam (weight decay as an L2 term in the gradient) or AdamW (decoupled weight decay) over the
    model's parameter groups (a group's ``lr_scale`` multiplies the learning rate); ``extra``
    parameters (a learned loss weighting's) form one more group without weight decay. Every group keeps
    its unscheduled rate as ``base_lr`` for :class:`~distmtl.engine.schedule.LearningRateSchedule`."""
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    groups = []
    for group in model.optimizer_groups():
        group = dict(group)
        group["lr"] = group[BASE_LR] = cfg.lr * group.pop("lr_scale", 1.0)
        groups.append(group)
    if extra:
        groups.append({"params": list(extra), "weight_decay": 0.0, BASE_LR: cfg.lr})
    return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
