"""Task-aware geometric augmentation of training samples (torchvision.transforms.v2).

Whether a sample may be augmented depends on the tasks it carries targets for (see
:class:`distmtl.config.schema.AugmentConfig`): one labelled ``forbid`` task keeps the sample as
it is; ``transform`` targets (boxes, masks) are moved with the image by the same random affine.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from distmtl.config.schema import AugmentConfig
from distmtl.data.sample_set import TargetSpec

_DEFAULT_POLICY = {"regression": "forbid", "detection": "transform", "segmentation": "transform"}


class Augmenter:
    """Callable on one item dict; picklable so DataLoader workers can use it."""

    def __init__(self, cfg: AugmentConfig, specs: dict[str, TargetSpec]) -> None:
        self.policy = {t: cfg.policy.get(t, _DEFAULT_POLICY.get(s.kind, "invariant")) for t, s in specs.items()}
        self.kinds = {t: s.kind for t, s in specs.items()}
        self.transform = v2.Compose([
            v2.RandomHorizontalFlip(cfg.hflip),
            v2.RandomAffine(degrees=cfg.rotation, translate=(cfg.translate, cfg.translate) if cfg.translate else None,
                            shear=cfg.shear or None),
        ])

    def __call__(self, item: dict) -> dict:
        labelled = [t for t, has in item["has_target"].items() if bool(has)]
        if any(self.policy[t] == "forbid" for t in labelled):
            return item
        image = item["image"]
        size = image.shape[-2:]
        moving = {t: self._wrap(t, item["targets"][t], size) for t in item["targets"] if self.policy[t] == "transform"}
        image, moved = self.transform(tv_tensors.Image(image), moving)
        targets = dict(item["targets"])
        for task, value in moved.items():
            targets[task] = self._unwrap(task, value, size)
        return {**item, "image": image.as_subclass(torch.Tensor), "targets": targets}

    def _wrap(self, task: str, target: torch.Tensor, size) -> torch.Tensor:
        if self.kinds[task] == "detection":
            scale = torch.tensor([size[1], size[0], size[1], size[0]], dtype=torch.float32)
            return tv_tensors.BoundingBoxes((target * scale)[None], format="XYXY", canvas_size=tuple(size))
        return tv_tensors.Mask(target)

    def _unwrap(self, task: str, value: torch.Tensor, size) -> torch.Tensor:
        if self.kinds[task] == "detection":
            scale = torch.tensor([size[1], size[0], size[1], size[0]], dtype=torch.float32)
            return (value.as_subclass(torch.Tensor)[0] / scale).clamp(0.0, 1.0)
        return value.as_subclass(torch.Tensor)
