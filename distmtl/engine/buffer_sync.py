"""The model as the engine runs it when the weighting reduces its own gradients (no DDP wrapper).

DDP does two things: it all-reduces gradients and, before every forward pass, broadcasts rank 0's buffers
(batch-norm running statistics) so that every rank's model stays identical. A gradient-level weighting does the
first itself; :class:`BufferSync` does the second.
"""

from __future__ import annotations

import torch
from torch import nn

from distmtl.engine.context import DistContext


class BufferSync(nn.Module):
    """``module`` whose buffers are overwritten with rank 0's before each forward pass (one broadcast per dtype)."""

    def __init__(self, module: nn.Module, ctx: DistContext) -> None:
        super().__init__()
        self.module = module
        self.ctx = ctx

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for buffer in self.module.buffers():
            by_dtype.setdefault(buffer.dtype, []).append(buffer)
        for buffers in by_dtype.values():
            flat = self.ctx.broadcast(torch.cat([b.detach().flatten() for b in buffers]))
            for buffer, part in zip(buffers, flat.split([b.numel() for b in buffers])):
                buffer.copy_(part.view_as(buffer))
        return self.module(x)
