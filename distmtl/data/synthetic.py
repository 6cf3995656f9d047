"""The embedded procedural multi-task image generator (seeded, no files, no network).

Each image shows one object on a textured background. The object is a "lobed" blob: in polar
coordinates its radius is ``s·(1 + d·cos(n·φ)) / (1 + d)``, stretched by an elongation ``a``
along an axis at angle θ. Targets, by construction in two families:

*Geometry* (all functions of the object's outline, so they are related to one another):

- ``fine`` (12 classes): lobe count n ∈ {3, 4, 5, 6} × lobe-depth level ∈ {shallow, medium, deep};
- ``coarse`` (4 classes): the lobe count alone — a grouping of ``fine`` (``coarse = fine // 3``);
- ``shape`` (4-D "shape space", each in [0, 1]): lobe depth d (continuous; its level is part of
  ``fine``), elongation a, size s, orientation cos 2θ (rescaled);
- ``bbox`` (x0, y0, x1, y1 in [0, 1]) and ``mask`` (object vs background), from the drawn outline;
- ``size_rank``: the object's size as a ranking target (only the order of two images counts).

*Appearance* (independent of the geometry and of each other):

- ``colour`` (6 classes): the object's hue sector;
- ``texture`` (4 classes): the background pattern (horizontal stripes, vertical stripes, checks, blotches).

Sizes, lobe depths and elongations are chosen so that lobes stay a few pixels deep and the
orientation visible at 32×32 pixels (every target is learnable at the demo's resolution), while
``fine`` stays harder than ``coarse``: it adds the depth level, which the lobes show less plainly.

A method that learns task relatedness should therefore group {fine, coarse, shape} apart from
{colour, texture}. Every sample is its own original image (``groups = arange(N)``).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.colors import hsv_to_rgb

from distmtl.config.schema import DataConfig
from distmtl.data.sample_set import SampleSet, TargetSpec
from distmtl.data.sources import register_source

LOBES = (3, 4, 5, 6)
DEPTH_LEVELS = (0.15, 0.35, 0.55)
DEPTH_JITTER = 0.06
ELONGATION = (1.2, 1.8)
SIZE = (0.45, 0.7)
CENTRE_SHIFT = 0.08
HUES = ("red", "yellow", "green", "cyan", "blue", "magenta")
TEXTURES = ("h-stripes", "v-stripes", "checks", "blotches")
_CHUNK = 256
DEFAULT_SAMPLES = 2000


def target_specs(cfg: DataConfig | None = None) -> dict[str, TargetSpec]:
    """The targets the generator produces (the same for every config)."""
    return {
        "fine": TargetSpec("classification", len(LOBES) * len(DEPTH_LEVELS), "lobe count × lobe depth"),
        "coarse": TargetSpec("classification", len(LOBES), "lobe count"),
        "colour": TargetSpec("classification", len(HUES), "object hue"),
        "texture": TargetSpec("classification", len(TEXTURES), "background pattern"),
        "shape": TargetSpec("regression", 4, "depth, elongation, size, orientation"),
        "size_rank": TargetSpec("ranking", 1, "object size, as an order"),
        "bbox": TargetSpec("detection", 4, "object box x0, y0, x1, y1"),
        "mask": TargetSpec("segmentation", 2, "background / object"),
    }


def class_names() -> dict[str, list[str]]:
    """Human-readable class names per classification target."""
    depth_names = ("shallow", "medium", "deep")
    return {
        "fine": [f"{n}-lobed {d}" for n in LOBES for d in depth_names],
        "coarse": [f"{n}-lobed" for n in LOBES],
        "colour": list(HUES),
        "texture": list(TEXTURES),
    }


def generate(num_samples: int, image_size: int = 64, seed: int = 0) -> SampleSet:
    """Generate ``num_samples`` images and all targets; the same arguments always give the same data."""
    rng = np.random.default_rng(seed)
    n = num_samples
    fine = rng.integers(0, len(LOBES) * len(DEPTH_LEVELS), n)
    coarse = fine // len(DEPTH_LEVELS)
    depth = np.asarray(DEPTH_LEVELS)[fine % len(DEPTH_LEVELS)] + rng.uniform(-DEPTH_JITTER, DEPTH_JITTER, n)
    elongation = rng.uniform(*ELONGATION, n)
    size = rng.uniform(*SIZE, n)
    theta = rng.uniform(0.0, np.pi, n)
    centre = rng.uniform(-CENTRE_SHIFT, CENTRE_SHIFT, (n, 2))
    phase = rng.uniform(0.0, 2 * np.pi, n)
    colour = rng.integers(0, len(HUES), n)
    texture = rng.integers(0, len(TEXTURES), n)

    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    masks = np.empty((n, image_size, image_size), dtype=np.int64)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        mask = _outline(image_size, np.asarray(LOBES)[coarse[sl]], depth[sl], elongation[sl], size[sl], theta[sl],
                        centre[sl], phase[sl])
        background = _background(image_size, texture[sl], rng)
        hsv = np.stack(
            [
                (colour[sl] + rng.uniform(-0.25, 0.25, mask.shape[0])) / len(HUES) % 1.0,
                rng.uniform(0.6, 1.0, mask.shape[0]),
                rng.uniform(0.65, 1.0, mask.shape[0]),
            ],
            axis=-1,
        )
        rgb = hsv_to_rgb(hsv)[:, None, None, :]
        pixels = np.where(mask[..., None], rgb, background[..., None])
        pixels = pixels + rng.normal(0.0, 0.03, pixels.shape)
        images[sl] = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
        masks[sl] = mask

    shape = np.stack(
        [
            (depth - (DEPTH_LEVELS[0] - DEPTH_JITTER)) / (DEPTH_LEVELS[-1] - DEPTH_LEVELS[0] + 2 * DEPTH_JITTER),
            (elongation - ELONGATION[0]) / (ELONGATION[1] - ELONGATION[0]),
            (size - SIZE[0]) / (SIZE[1] - SIZE[0]),
            (np.cos(2 * theta) + 1.0) / 2.0,
        ],
        axis=1,
    ).astype(np.float32)
    targets = {
        "fine": torch.from_numpy(fine),
        "coarse": torch.from_numpy(coarse),
        "colour": torch.from_numpy(colour),
        "texture": torch.from_numpy(texture),
        "shape": torch.from_numpy(shape),
        "size_rank": torch.from_numpy(shape[:, 2].copy()),
        "bbox": torch.from_numpy(_boxes(masks)),
        "mask": torch.from_numpy(masks),
    }
    return SampleSet(
        images=torch.from_numpy(images),
        targets=targets,
        has_target={t: torch.ones(n, dtype=torch.bool) for t in targets},
        groups=np.arange(n),
        specs=target_specs(),
        class_names=class_names(),
    )


@register_source("synthetic", target_specs)
def synthetic_source(cfg: DataConfig) -> SampleSet:
    """The generator as a config-driven source."""
    return generate(cfg.num_samples or DEFAULT_SAMPLES, cfg.image_size, cfg.seed)


def _outline(size: int, lobes, depth, elongation, radius, theta, centre, phase) -> np.ndarray:
    """Boolean masks (B×S×S) of the lobed, stretched, rotated objects."""
    axis = np.linspace(-1.0, 1.0, size)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    dx = x[None] - centre[:, 0, None, None]
    dy = y[None] - centre[:, 1, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    stretch = np.sqrt(elongation)[:, None, None]
    u = (dx * cos + dy * sin) / stretch
    v = (-dx * sin + dy * cos) * stretch
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    d = depth[:, None, None]
    edge = radius[:, None, None] * (1.0 + d * np.cos(lobes[:, None, None] * phi + phase[:, None, None])) / (1.0 + d)
    return rho <= edge


def _background(size: int, texture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey textured backgrounds (B×S×S) of the given pattern classes."""
    b = len(texture)
    axis = np.linspace(0.0, 1.0, size)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    freq = rng.uniform(4.0, 7.0, (b, 1, 1)) * 2 * np.pi
    shift = rng.uniform(0.0, 2 * np.pi, (b, 1, 1))
    coarse_noise = rng.uniform(-1.0, 1.0, (b, 4, 4))
    blotches = np.kron(coarse_noise, np.ones((size // 4 + 1, size // 4 + 1)))[:, :size, :size]
    patterns = np.stack(
        [
            np.sin(freq * y + shift),
            np.sin(freq * x + shift),
            np.sign(np.sin(freq * x + shift) * np.sin(freq * y + shift)),
            blotches,
        ],
        axis=1,
    )
    chosen = patterns[np.arange(b), texture]
    level = rng.uniform(0.35, 0.55, (b, 1, 1))
    return np.clip(level + 0.15 * chosen, 0.0, 1.0)


def _boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes (x0, y0, x1, y1) in [0, 1] around each mask's foreground."""
    size = masks.shape[-1]
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    first = lambda m: m.argmax(axis=1)  # noqa: E731
    last = lambda m: size - m[:, ::-1].argmax(axis=1)  # noqa: E731
    return (np.stack([first(cols), first(rows), last(cols), last(rows)], axis=1) / size).astype(np.float32)
