"""Single-box detection: the head predicts one box per image; Distance-IoU loss; IoU.

The head's 4 outputs pass through a sigmoid as (cx, cy, w, h) in [0, 1] and become (x0, y0, x1,
y1), so predicted boxes are always valid. Loss: torchvision's ``distance_box_iou_loss``
(1 − IoU + ρ²/c²). Metrics: mean IoU and the share of boxes with IoU ≥ 0.5.
"""

from __future__ import annotations

import math

import torch

from distmtl.tasks.base import Task, image_bytes, register_kind


def to_boxes(output: torch.Tensor) -> torch.Tensor:
    """Raw head outputs (B×4) → boxes x0, y0, x1, y1 in [0, 1]."""
    cx, cy, w, h = torch.sigmoid(output.float()).unbind(dim=1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


@register_kind("detection")
class DetectionTask(Task):
    """One box (x0, y0, x1, y1, normalised) per image."""

    metric_modes = {"iou": "max", "hit50": "max"}
    headline = "iou"
    example_kind = "detection_examples"

    def example_record(self, images: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """The images with their true and predicted boxes (x0, y0, x1, y1, normalised) and each one's IoU."""
        predicted = to_boxes(outputs)
        return {"task": self.name, "images": image_bytes(images), "true": targets.float().tolist(),
                "predicted": predicted.tolist(), "iou": _ops().box_iou(predicted, targets.float()).diagonal().tolist()}

    def fill_missing(self, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        placeholder = torch.tensor([0.0, 0.0, 1.0, 1.0], device=target.device, dtype=target.dtype)
        return torch.where(mask[:, None], target, placeholder)

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _ops().distance_box_iou_loss(to_boxes(output), target.float(), reduction="none")

    def metric_state_size(self) -> int:
        return 3

    def metric_state(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        iou = _ops().box_iou(to_boxes(output), self.fill_missing(target, mask).float()).diagonal().double()
        weight = mask.double()
        return torch.stack([(iou * weight).sum(), ((iou >= 0.5).double() * weight).sum(), weight.sum()])

    def metrics(self, state: torch.Tensor) -> dict[str, float]:
        iou, hits, n = state.tolist()
        return {"iou": iou / n, "hit50": hits / n} if n else {"iou": math.nan, "hit50": math.nan}


def _ops():
    """torchvision.ops, imported on first use: only runs with a detection task load torchvision."""
    import torchvision.ops

    return torchvision.ops
