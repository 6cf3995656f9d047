"""Dense tasks decoded back to the input's size: segmentation and reconstruction."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distmtl.features import FeatureShape
from distmtl.tasks.base import Task, image_bytes, register_kind
from distmtl.tasks.heads import DenseDecoder


@register_kind("segmentation")
class SegmentationTask(Task):
    """Per-pixel classes: pixel cross-entropy; mIoU (from a confusion matrix summed over the epoch, the
    IoU of each class nan-averaged over the classes present) and pixel accuracy."""

    metric_modes = {"miou": "max", "pixel_accuracy": "max"}
    headline = "miou"
    example_kind = "segmentation_examples"

    def example_record(self, images: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """The images with their true and predicted masks (per-pixel class indices)."""
        return {"task": self.name, "classes": self.size, "images": image_bytes(images),
                "true": targets.tolist(), "predicted": outputs.argmax(dim=1).tolist()}

    def head(self, shape: FeatureShape) -> nn.Module:
        return DenseDecoder(shape, self.size)

    def metric_state_size(self) -> int:
        return self.size * self.size

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, reduction="none").flatten(1).mean(dim=1)

    def metric_state(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The confusion matrix (true class × predicted class, flattened) over pixels of masked-in samples."""
        k = self.size
        pairs = (target * k + output.argmax(dim=1))[mask].flatten()
        return torch.bincount(pairs, minlength=k * k).double()

    def metrics(self, state: torch.Tensor) -> dict[str, float]:
        confusion = state.view(self.size, self.size)
        total = confusion.sum()
        if total == 0:
            return {"miou": math.nan, "pixel_accuracy": math.nan}
        hits = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - hits
        iou = torch.where(union > 0, hits / union.clamp(min=1), torch.full_like(hits, math.nan))
        return {"miou": torch.nanmean(iou).item(), "pixel_accuracy": (hits.sum() / total).item()}


@register_kind("reconstruction")
class ReconstructionTask(Task):
    """Decode the (clean) input image: per-pixel binary cross-entropy on logits; reports the BCE and the
    mean squared error of the reconstruction. The target is the input itself, so every source offers it."""

    metric_modes = {"bce": "min", "mse": "min"}
    headline = "mse"

    def head(self, shape: FeatureShape) -> nn.Module:
        return DenseDecoder(shape, shape.image_channels)

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output, target, reduction="none").flatten(1).mean(dim=1)

    def metric_state(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bce = self.per_sample_loss(output, target).double()
        mse = (torch.sigmoid(output) - target).pow(2).flatten(1).mean(dim=1).double()
        weight = mask.double()
        return torch.stack([(bce * weight).sum(), (mse * weight).sum(), weight.sum()])

    def metric_state_size(self) -> int:
        return 3

    def metrics(self, state: torch.Tensor) -> dict[str, float]:
        bce, mse, n = state.tolist()
        return {"bce": bce / n, "mse": mse / n} if n else {"bce": math.nan, "mse": math.nan}
