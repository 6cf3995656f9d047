"""Figures drawn from the numbers models and controllers record: models compute, tracking draws.

:func:`save_artifacts` writes each record as ``<name>_epoch<NNN>.json`` and, where a plot is registered under its
name (up to an ``@``: ``confusion_matrix@fine``), the figure beside it as ``.png`` (the tracking callbacks log both
to MLflow). matplotlib is imported, with its non-interactive backend, only when a figure is drawn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distmtl.registry import Registry

PLOTS: Registry[Callable[[dict], Any]] = Registry("plot", "artifacts")


def save_artifacts(records: dict[str, dict], directory: Path, epoch: int) -> None:
    """Write every record as JSON, and its figure as PNG where a plot is registered for its name."""
    if not records:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for name, record in records.items():
        stem = directory / f"{name}_epoch{epoch:03d}"
        stem.with_suffix(".json").write_text(json.dumps(record, indent=1))
        kind = name.split("@")[0]  # "confusion_matrix@fine": the plot of one task's record
        if kind in PLOTS:
            save_figure(kind, record, stem.with_suffix(".png"))


def save_figure(name: str, record: dict, path: Path) -> None:
    """Draw ``record`` with the plot registered as ``name`` into the PNG file ``path``."""
    figure = PLOTS.get(name)(record)
    figure.savefig(path, dpi=90)
    pyplot().close(figure)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (figures go to files, never to a window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@PLOTS.register("cross_stitch_alpha")
def cross_stitch_alpha(record: dict):
    """One heat map per stage of the cross-stitch α (mean over channels; row = receiving task)."""
    plt = pyplot()
    tasks, stages = record["tasks"], [np.asarray(a) for a in record["stages"]]
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 3.2), squeeze=False)
    for s, (ax, alpha) in enumerate(zip(axes[0], stages)):
        _annotated_heatmap(ax, alpha, tasks, "{:.2f}", cmap="viridis", vmin=0, vmax=max(1.0, float(alpha.max())))
        ax.set_title(f"stage {s}")
    fig.suptitle("cross-stitch α (mean over channels; row = receiving task)")
    fig.tight_layout()
    return fig


def _annotated_heatmap(ax, matrix: np.ndarray, labels: list[str], cell: str, **shown: Any) -> None:
    """``matrix`` as an image with ``labels`` on both axes and each value written in its cell (``cell`` format),
    white on the darker half of the colour range."""
    ax.imshow(matrix, **shown)
    slanted = {"rotation": 45, "ha": "right"} if max(map(len, labels)) > 2 else {}  # names slant, class numbers not
    ax.set_xticks(range(len(labels)), labels, **slanted)
    ax.set_yticks(range(len(labels)), labels)
    middle = (shown.get("vmin", matrix.min()) + shown.get("vmax", matrix.max())) / 2
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, cell.format(value), ha="center", va="center", fontsize=7, color="w" if value > middle else "k")


@PLOTS.register("selective_relatedness")
def selective_relatedness(record: dict):
    """Heat map of the tasks' gradient-factor cosine similarity, ordered by an average-linkage dendrogram."""
    plt = pyplot()
    fig, (top, heat) = plt.subplots(2, 1, figsize=(0.45 * len(record["tasks"]) + 3, 0.45 * len(record["tasks"]) + 4),
                                    gridspec_kw={"height_ratios": [1, 3]})
    _dendrogram_heatmap(fig, top, heat, record["tasks"], np.asarray(record["similarity"]),
                        "task relatedness (cosine of gradient factors)", vmin=-1, vmax=1)
    fig.tight_layout()
    return fig


@PLOTS.register("task_affinity")
def task_affinity(record: dict):
    """The epoch's affinity matrices (row: the task whose step or gradient, column: the task whose loss), each ordered
    by an average-linkage dendrogram of its symmetric part; the colour range is set by the off-diagonal values (a
    task's own step helps it far more than another's) and every value is written in its cell."""
    plt = pyplot()
    tasks = record["tasks"]
    panels = [(name, title) for name, title in (("lookahead", "lookahead Z(row → column)"),
                                                ("lookahead_net", "lookahead net of the drift"),
                                                ("cosine", "gradient cosine")) if name in record]
    side = 0.5 * len(tasks) + 2.5
    fig, axes = plt.subplots(2, len(panels), figsize=(side * len(panels), side + 1), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 3]})
    for column, (name, title) in enumerate(panels):
        matrix = np.asarray(record[name])
        off = np.abs(matrix[~np.eye(len(tasks), dtype=bool)]) if len(tasks) > 1 else np.abs(matrix)
        bound = max(float(off.max()), 1e-12)
        order = _dendrogram_heatmap(fig, axes[0, column], axes[1, column], tasks, matrix, title, vmin=-bound,
                                    vmax=bound)
        for (i, j), value in np.ndenumerate(matrix[np.ix_(order, order)]):
            axes[1, column].text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=6,
                                 color="w" if abs(value) > 0.6 * bound else "k")
    fig.tight_layout()
    return fig


def _dendrogram_heatmap(fig, top, heat, tasks: list[str], matrix: np.ndarray, title: str, **shown: Any) -> list[int]:
    """``matrix`` as a heat map in ``heat``, its rows and columns ordered by the average-linkage dendrogram drawn in
    ``top`` (distance: the largest value of the symmetric part minus each pair's); returns that order."""
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    symmetric = (matrix + matrix.T) / 2
    distance = np.clip(symmetric.max() - symmetric, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    tree = dendrogram(linkage(squareform(distance, checks=False), "average"), labels=tasks, ax=top, no_labels=True)
    top.set_title(title)
    top.axis("off")
    order = tree["leaves"]
    image = heat.imshow(matrix[np.ix_(order, order)], cmap="RdBu_r", **shown)
    heat.set_xticks(range(len(order)), [tasks[i] for i in order], rotation=60, ha="right")
    heat.set_yticks(range(len(order)), [tasks[i] for i in order])
    fig.colorbar(image, ax=heat, fraction=0.046)
    return order


@PLOTS.register("pareto_front")
def pareto_front(record: dict):
    """A Pareto sweep's finished trials on its first two metrics, the front marked and joined."""
    plt = pyplot()
    (x_name, y_name), points, front = record["metrics"][:2], record["points"], set(record["front"])
    fig, ax = plt.subplots(figsize=(5, 4))
    others = [v for t, v in points.items() if t not in front]
    if others:
        ax.scatter([v[0] for v in others], [v[1] for v in others], color="0.6", label="dominated")
    members = sorted((v for t, v in points.items() if t in front), key=lambda v: v[0])
    ax.plot([v[0] for v in members], [v[1] for v in members], "o-", color="C3", label="Pareto front")
    for trial, value in points.items():
        ax.annotate(trial, value[:2], fontsize=6, xytext=(3, 3), textcoords="offset points")
    modes = record["modes"]
    ax.set_xlabel(f"{x_name} ({modes[0]})")
    ax.set_ylabel(f"{y_name} ({modes[1]})")
    ax.legend()
    ax.set_title("Pareto sweep: last-epoch validation values")
    fig.tight_layout()
    return fig


@PLOTS.register("confusion_matrix")
def confusion_matrix(record: dict):
    """A classification task's confusion matrix on the test split at the best epoch, counts in the cells; the
    axes name the classes where the record has their names (``class_names``), else number them."""
    plt = pyplot()
    matrix = np.asarray(record["matrix"])
    size = len(matrix)
    labels = record.get("class_names") or [str(c) for c in range(size)]
    margin = 0.07 * max(map(len, labels))  # inches for the longest name, written slanted below and left
    fig, ax = plt.subplots(figsize=(1.2 + margin + 0.45 * size, 1.0 + margin + 0.4 * size))
    _annotated_heatmap(ax, matrix, labels, "{}", cmap="Blues")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"{record['task']}: test confusion matrix (accuracy {accuracy:.3f})", fontsize=9)
    fig.tight_layout()
    return fig


@PLOTS.register("predicted_vs_true")
def predicted_vs_true(record: dict):
    """A regression task's predictions against the truth on the test split at the best epoch, one panel per output."""
    plt = pyplot()
    predicted, true = np.asarray(record["predicted"]), np.asarray(record["true"])
    dims = predicted.shape[1]
    fig, axes = plt.subplots(1, dims, figsize=(2.6 * dims, 2.8), squeeze=False)
    for d, ax in enumerate(axes[0]):
        ax.scatter(true[:, d], predicted[:, d], s=4, alpha=0.5)
        low = float(min(true[:, d].min(), predicted[:, d].min()))
        high = float(max(true[:, d].max(), predicted[:, d].max()))
        ax.plot([low, high], [low, high], color="C3", linewidth=1)
        ax.set_title(f"output {d}", fontsize=8)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
    fig.suptitle(f"{record['task']}: test predictions at the best epoch", fontsize=9)
    fig.tight_layout()
    return fig


#: Colours of segmentation classes and boxes (matplotlib's tab10): class k is drawn in _PALETTE[k % 10].
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf"]
_TRUE_BOX, _PREDICTED_BOX = "#2ca02c", "#d62728"


def _display_images(record: dict, side: int = 128):
    """The record's images (bytes, C×H×W) as uint8 RGB tensors enlarged to at least ``side`` pixels, so that
    overlays on tiny images stay visible; returns them and the enlargement factor."""
    import torch

    images = torch.tensor(record["images"], dtype=torch.uint8)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    scale = max(1, side // images.shape[-1])
    return images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3), scale


@PLOTS.register("segmentation_examples")
def segmentation_examples(record: dict):
    """A few test images at the best epoch: each one, then its true and its predicted mask drawn over it
    (one colour per class)."""
    import torch
    from torchvision.utils import draw_segmentation_masks

    plt = pyplot()
    images, scale = _display_images(record)
    colours = [_PALETTE[k % len(_PALETTE)] for k in range(record["classes"])]
    fig, axes = plt.subplots(len(images), 3, figsize=(6.6, 2.3 * len(images)), squeeze=False)
    for i, (row, image) in enumerate(zip(axes, images)):
        panels = {"image": image}
        for key in ("true", "predicted"):
            labels = torch.tensor(record[key][i]).repeat_interleave(scale, 0).repeat_interleave(scale, 1)
            masks = labels[None] == torch.arange(record["classes"])[:, None, None]
            panels[key] = draw_segmentation_masks(image, masks, alpha=0.45, colors=colours)
        for ax, (title, panel) in zip(row, panels.items()):
            ax.imshow(panel.permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    from matplotlib.patches import Patch

    fig.suptitle(f"{record['task']}: test images at the best epoch, true and predicted masks", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.legend(handles=[Patch(color=c, label=f"class {k}") for k, c in enumerate(colours)], loc="lower center",
               ncol=len(colours), fontsize=7, frameon=False)
    return fig


@PLOTS.register("detection_examples")
def detection_examples(record: dict):
    """A few test images at the best epoch with the true box (green) and the predicted one (red), IoU above."""
    import torch
    from torchvision.utils import draw_bounding_boxes

    plt = pyplot()
    images, _ = _display_images(record)
    side = images.shape[-1]
    fig, axes = plt.subplots(1, len(images), figsize=(2.4 * len(images), 2.7), squeeze=False)
    for i, (ax, image) in enumerate(zip(axes[0], images)):
        boxes = torch.tensor([record["true"][i], record["predicted"][i]]) * (side - 1)
        drawn = draw_bounding_boxes(image, boxes, colors=[_TRUE_BOX, _PREDICTED_BOX], width=2)
        ax.imshow(drawn.permute(1, 2, 0).numpy())
        ax.set_title(f"IoU {record['iou'][i]:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{record['task']}: true box (green), predicted (red) on test images at the best epoch", fontsize=9)
    fig.tight_layout()
    return fig
