"""What every clustering of Cluster Contrast returns: one pseudo label per training image, and the
cluster centroids the memory starts from.

Cluster Contrast (Dai et al. 2021, Sec. 3.1-3.2; official ``examples/cluster_contrast_train_usl*.py``):
label -1 marks the outliers, which are left out of that epoch's training; cluster ``c``'s memory entry
starts as the mean of its members' features (``generate_cluster_features``), L2-normalised by the
memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

OUTLIER = -1
"""Pseudo label of an image the clustering leaves out (not trained on that epoch)."""


@dataclass(frozen=True)
class PseudoLabels:
    """``labels[i]``: the cluster ``0..C-1`` of training image i, or :data:`OUTLIER`."""

    labels: np.ndarray

    @property
    def num_clusters(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0

    @property
    def num_outliers(self) -> int:
        return int((self.labels == OUTLIER).sum())


class Clustering(Protocol):
    """A clustering of ``model.clustering`` (``JaccardDBSCAN``, ``KnnInfomap``): L2-normalised features
    ``[N, D]`` and the images' cameras ``[N]`` -> pseudo labels."""

    def __call__(self, features: Tensor, camids: Tensor | None = None) -> PseudoLabels: ...

    def no_cluster_advice(self) -> str:
        """What to change when every image came out an outlier (part of the error)."""
        ...


def cluster_centroids(features: Tensor, labels: Tensor) -> Tensor:
    """``[num_clusters, D]`` mean feature of each cluster ``0..C-1`` (outliers ignored), not normalised."""
    keep = labels >= 0
    if not bool(keep.any()):
        raise ValueError("cluster_centroids: every image is an outlier (no cluster)")
    labels, features = labels[keep], features[keep]
    count = int(labels.max()) + 1
    sums = torch.zeros(count, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    sizes = torch.bincount(labels, minlength=count).clamp_(min=1)
    return sums / sizes[:, None].to(features.dtype)
