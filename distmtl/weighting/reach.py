"""Which parameters each task's loss reaches, found once from the model itself.

A gradient-level method aggregates the gradients of the parameters that several tasks reach and leaves the
others to their one task. Which those are follows from the graph, not from a list an architecture keeps: one
probe forward pass and one ``autograd.grad`` per task output tell it for any architecture. Hard sharing: the
encoder is shared, each head its task's own. Label reuse: the shared encoder (``shared_reuse_*``) and the
source task's encoder and head (its prediction feeds the target's head) are shared. Cross-stitch: the units
and every branch's stages (the units mix them into every task); each branch's bottleneck and head are its task's.
Independent networks: nothing is shared.
"""

from __future__ import annotations

import torch
from torch import nn

from distmtl.weighting.base import ParameterSplit


def split_parameters(model: nn.Module, tasks: list[str], image_shape: tuple[int, ...],
                     device: torch.device) -> ParameterSplit:
    """The trainable parameters of ``model`` that more than one task's output depends on, and each task's own."""
    params = [p for p in model.parameters() if p.requires_grad]
    training = model.training
    model.eval()  # batch-norm statistics stay as they are
    outputs = model(torch.zeros(2, *image_shape, device=device))
    reached: dict[str, set[int]] = {}
    for task in tasks:
        grads = torch.autograd.grad(outputs[task].float().sum(), params, retain_graph=True, allow_unused=True)
        reached[task] = {i for i, g in enumerate(grads) if g is not None}
    model.train(training)
    users = [sum(i in reached[t] for t in tasks) for i in range(len(params))]
    return ParameterSplit(shared=[p for i, p in enumerate(params) if users[i] > 1],
                          own={t: [params[i] for i in sorted(reached[t]) if users[i] == 1] for t in tasks})
