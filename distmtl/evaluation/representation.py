"""Representations of a trained model and their agreement with given dissimilarities (Kendall τ)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import kendalltau
from torch.utils.data import DataLoader, Dataset

from distmtl.data.sample_set import SampleSet
from distmtl.errors import DistmtlError
from distmtl.models import MultiTaskModel


@torch.no_grad()
def representations(model: MultiTaskModel, dataset: Dataset, batch_size: int = 256) -> np.ndarray:
    """The model's branch-point representation of every sample of ``dataset`` (eval mode), N×D."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [model.representation(batch["image"].to(device)).float().cpu()
              for batch in DataLoader(dataset, batch_size=batch_size)]
    return torch.cat(chunks).numpy()


def kendall_tau(features: np.ndarray, dissimilarity: np.ndarray, metric: str = "euclidean") -> tuple[float, float]:
    """Kendall τ (and its p-value) between the pairwise ``metric`` distances of ``features`` (N×D) and a
    given N×N ``dissimilarity`` matrix (e.g. averaged human ratings), over the N(N−1)/2 pairs."""
    dissimilarity = np.asarray(dissimilarity, dtype=float)
    n = len(features)
    if dissimilarity.shape != (n, n):
        raise DistmtlError(f"the dissimilarity matrix is {dissimilarity.shape}, expected ({n}, {n}) for {n} images")
    result = kendalltau(pdist(features, metric=metric), squareform(dissimilarity, checks=False))
    return float(result.statistic), float(result.pvalue)


def mapping_kendall_tau(model: MultiTaskModel, samples: SampleSet, indices: np.ndarray, mapping: str) -> float:
    """Kendall τ between the representation distances of the samples in ``indices`` that carry ``mapping``'s
    target and their Euclidean distances in that target space (nan for fewer than three such samples)."""
    kept = indices[samples.has_target[mapping].numpy()[indices]]
    if len(kept) < 3:
        return math.nan
    dataset = samples.dataset(kept)
    targets = np.stack([dataset[i]["targets"][mapping].numpy() for i in range(len(kept))])
    distances = np.linalg.norm(targets[:, None] - targets[None], axis=-1)
    return kendall_tau(representations(model, dataset), distances)[0]
