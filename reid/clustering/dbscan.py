"""Pseudo labels by DBSCAN on the Jaccard graph: the clustering of the Cluster Contrast paper.

Cluster Contrast (Dai et al. 2021, Sec. 3.1; official ``examples/cluster_contrast_train_usl.py``):
every epoch the training features are clustered by ``DBSCAN(eps, min_samples=4,
metric="precomputed")`` on the k-reciprocal Jaccard distance (``reid.clustering.jaccard``); DBSCAN's
noise points are the outliers (``reid.clustering.pseudo_labels``). ``model/clustering=jaccard_dbscan``
(the default of ``conf/model/cluster_contrast*.yaml``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.cluster import DBSCAN
from torch import Tensor

from reid.clustering.camera_centering import features_to_cluster
from reid.clustering.jaccard import jaccard_graph
from reid.clustering.pseudo_labels import PseudoLabels

log = logging.getLogger("reid")


@dataclass(frozen=True)
class JaccardDBSCAN:
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

    def __call__(self, features: Tensor, camids: Tensor | None = None) -> PseudoLabels:
        """Features ``[N, D]`` (L2-normalised) -> pseudo labels: Jaccard graph, then DBSCAN. A set smaller
        than ``k1`` (a test tree) uses ``k1 = N`` (and ``k2 <= N``), with a warning. ``camids`` ``[N]``:
        the images' cameras, needed by ``camera_centering``."""
        features = features_to_cluster(features, camids, self.camera_centering)
        k1, k2 = min(self.k1, features.shape[0]), min(self.k2, features.shape[0])
        if k1 < self.k1:
            log.warning(
                "clustering %d images with k1=%d < model.clustering.k1=%d", features.shape[0], k1, self.k1
            )
        graph = jaccard_graph(features, k1, k2, max_distance=self.eps)
        return dbscan(graph, self.eps, self.min_samples)

    def no_cluster_advice(self) -> str:
        """What to change when every image came out an outlier."""
        return f"DBSCAN (model.clustering.eps={self.eps}, min_samples={self.min_samples}): raise eps"


def dbscan(graph: sparse.csr_matrix, eps: float, min_samples: int) -> PseudoLabels:
    """scikit-learn's DBSCAN on a sparse precomputed distance graph: the stored entries are the only
    candidate neighbours, so pairs farther than ``eps`` need not be stored; labels are numbered in the
    order of their first core point, as on the dense matrix."""
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph)
    return PseudoLabels(labels.astype(np.int64))
