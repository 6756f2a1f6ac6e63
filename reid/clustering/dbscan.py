"""Pseudo labels by DBSCAN on the Jaccard graph, and the cluster centroids of the memory.

Cluster Contrast (Dai et al. 2021, Sec. 3.1-3.2; official ``examples/cluster_contrast_train_usl.py``):
every epoch the training features are clustered by ``DBSCAN(eps, min_samples=4,
metric="precomputed")`` on the Jaccard distance (``reid.clustering.jaccard``); label -1 marks the
outliers, which are left out of that epoch's training; cluster ``c``'s memory entry starts as the mean
of its members' features (``generate_cluster_features``), L2-normalised by the memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from sklearn.cluster import DBSCAN
from torch import Tensor

from reid.clustering.camera_centering import center_per_camera
from reid.clustering.jaccard import jaccard_graph

log = logging.getLogger("reid")

OUTLIER = -1
"""Pseudo label of an image DBSCAN leaves unclustered (not trained on that epoch)."""


@dataclass(frozen=True)
class ClusteringConfig:
    """``eps``: DBSCAN radius (official ``--eps``: 0.6 Market-1501, 0.7 MSMT17); ``min_samples``: points
    within ``eps`` (itself included) that make a core point (official 4); ``k1``, ``k2``: the Jaccard
    distance's neighbourhoods (official 30, 6); ``camera_centering``: cluster the features with each
    camera's mean removed (``reid.clustering.camera_centering``; off in the official recipe)."""

    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    camera_centering: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < float(self.eps) < 1.0:
            raise ValueError(f"model.clustering.eps={self.eps!r}: expected a Jaccard radius in (0, 1)")
        if int(self.min_samples) < 1:
            raise ValueError(f"model.clustering.min_samples={self.min_samples!r}: expected an integer >= 1")
        if not 1 <= int(self.k2) <= int(self.k1):
            raise ValueError(f"model.clustering: expected 1 <= k2 <= k1, got k1={self.k1!r}, k2={self.k2!r}")


@dataclass(frozen=True)
class PseudoLabels:
    """``labels[i]``: the cluster of training image i, or :data:`OUTLIER`."""

    labels: np.ndarray

    @property
    def num_clusters(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0

    @property
    def num_outliers(self) -> int:
        return int((self.labels == OUTLIER).sum())


def dbscan(graph: sparse.csr_matrix, eps: float, min_samples: int) -> PseudoLabels:
    """scikit-learn's DBSCAN on a sparse precomputed distance graph: the stored entries are the only
    candidate neighbours, so pairs farther than ``eps`` need not be stored; labels are numbered in the
    order of their first core point, as on the dense matrix."""
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph)
    return PseudoLabels(labels.astype(np.int64))


def cluster_features(
    features: Tensor, config: ClusteringConfig, camids: Tensor | None = None
) -> PseudoLabels:
    """Features ``[N, D]`` (L2-normalised) -> pseudo labels: Jaccard graph, then DBSCAN. A set smaller
    than ``k1`` (a test tree) uses ``k1 = N`` (and ``k2 <= N``), with a warning. ``camids`` ``[N]``: the
    images' cameras, needed by ``config.camera_centering``."""
    if config.camera_centering:
        if camids is None:
            raise ValueError("model.clustering.camera_centering=true needs the training images' camera ids")
        features = center_per_camera(features, camids)
    k1, k2 = min(config.k1, features.shape[0]), min(config.k2, features.shape[0])
    if k1 < config.k1:
        log.warning(
            "clustering %d images with k1=%d < model.clustering.k1=%d", features.shape[0], k1, config.k1
        )
    graph = jaccard_graph(features, k1, k2, max_distance=config.eps)
    return dbscan(graph, config.eps, config.min_samples)


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
