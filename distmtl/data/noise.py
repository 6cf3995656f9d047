"""Salt-and-pepper input noise, applied on the fly to training batches only."""

from __future__ import annotations

import torch


def salt_and_pepper(images: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Return ``images`` (B×C×H×W in [0, 1]) with a fraction ``level`` of pixels set to 0 or 1 (half each).

    A pixel is corrupted in all channels at once, as in the sketch-mapping studies. ``level=0``
    returns the input unchanged.
    """
    if level <= 0:
        return images
    b, _, h, w = images.shape
    u = torch.rand((b, 1, h, w), generator=generator, device=images.device)
    salt = (u < level / 2).to(images.dtype)
    corrupt = u < level
    return torch.where(corrupt, salt, images)
