"""Pseudo labels by Infomap on the cosine k-nearest-neighbour graph: Cluster Contrast's second clustering.

alibaba/cluster-contrast-reid added it after the paper (README update of 2021-11-19: better than DBSCAN
and "more robust on each data set"; ``examples/cluster_contrast_train_usl_infomap.py`` with
``clustercontrast/utils/infomap_cluster.py``). Every epoch, on the L2-normalised training features:

1. **neighbours**: the ``k1`` nearest features of each image by inner product ``s``, the image itself
   included (official: a faiss ``IndexFlatIP`` over the training set), held as the distance
   ``d = 1 - s`` in float32;
2. **links**: a directed link ``i -> j`` for each neighbour ``j != i`` with ``d_ij <= 1 - eps``, of
   weight ``1 - d_ij`` (``j``'s list need not hold ``i``);
3. **Infomap** (Rosvall & Bergstrom, PNAS 2008: the partition minimising the map equation, the
   description length of a random walk on the graph), two-level, directed flow (``--two-level
   --directed``), splits the linked images into modules;
4. **outliers**: an image with no link of its own (no neighbour within ``eps``), even when others link
   to it and Infomap puts it in a module, and every image of a module of at most ``k2`` images, the
   module counted with such images (the official post-processing of ``cluster_by_infomap``).

The other modules are the clusters, numbered in Infomap's module order. The official script's values
(README: ``--eps 0.5 --k1 15 --k2 4``) are the defaults; ``model/clustering=knn_infomap`` selects it.
It needs the ``infomap`` package (``pip install 'reid[infomap]'``; in the dev extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from reid.clustering.camera_centering import features_to_cluster
from reid.clustering.pseudo_labels import OUTLIER, PseudoLabels

ROW_BLOCK = 1024
"""Rows whose similarities to the whole set exist at once (4 B x N each: 130 MB at MSMT17 scale)."""


@dataclass(frozen=True)
class KnnLinks:
    """The directed, weighted links of step 2: ``source[e] -> target[e]`` of ``weight[e]``, by source
    and, within a source, by rising distance (the official order of ``addLink``)."""

    num_nodes: int
    source: np.ndarray
    target: np.ndarray
    weight: np.ndarray

    @property
    def has_own_link(self) -> np.ndarray:
        """``[N]`` bool: the image links to at least one neighbour."""
        mask = np.zeros(self.num_nodes, dtype=bool)
        mask[self.source] = True
        return mask


def knn_links(features: Tensor, k1: int, eps: float) -> KnnLinks:
    """Steps 1-2 of the module docstring for ``features`` ``[N, D]`` (L2-normalised, used as given)."""
    if features.ndim != 2:
        raise ValueError(f"knn_links: expected features [N, D], got shape {tuple(features.shape)}")
    n = features.shape[0]
    if not 1 <= k1 <= n:
        raise ValueError(f"knn_links: needs 1 <= k1 <= N, got k1={k1}, N={n} (model.clustering.k1)")
    features = features.detach().float()
    sources, targets, weights = [], [], []
    for start in range(0, n, ROW_BLOCK):
        rows = torch.arange(start, min(start + ROW_BLOCK, n))
        similarity, neighbour = torch.topk(features[rows] @ features.T, k1, dim=1)
        distance = (1.0 - similarity).numpy()
        keep = (neighbour != rows[:, None]).numpy() & (distance <= 1.0 - eps)
        source, slot = np.nonzero(keep)
        sources.append(source + start)
        targets.append(neighbour.numpy()[source, slot])
        weights.append((1.0 - distance[source, slot]).astype(np.float64))
    return KnnLinks(n, np.concatenate(sources), np.concatenate(targets), np.concatenate(weights))


def infomap_modules(links: KnnLinks) -> np.ndarray:
    """Step 3: ``[N]`` Infomap module of each image (ids from 1, in Infomap's order), 0 for an image that
    is in no link."""
    try:
        import infomap
    except ImportError as error:
        raise ImportError(
            "model/clustering=knn_infomap needs the infomap package: pip install 'reid[infomap]'"
        ) from error
    modules = np.zeros(links.num_nodes, dtype=np.int64)
    if links.source.size == 0:
        return modules
    network = infomap.Infomap(two_level=True, directed=True, silent=True)
    network.add_links(zip(links.source.tolist(), links.target.tolist(), links.weight.tolist()))
    for node, module in network.run().modules().items():
        modules[node] = module
    return modules


def module_labels(modules: np.ndarray, has_own_link: np.ndarray, k2: int) -> PseudoLabels:
    """Step 4: modules (0: none) -> pseudo labels; modules of at most ``k2`` images and images without a
    link of their own are outliers, the other modules are numbered ``0..C-1`` in module order."""
    sizes = np.bincount(modules)
    kept = np.flatnonzero(sizes > k2)
    kept = kept[kept > 0]
    number = np.full(sizes.size, OUTLIER, dtype=np.int64)
    number[kept] = np.arange(kept.size)
    labels = number[modules]
    labels[~has_own_link] = OUTLIER
    return PseudoLabels(labels)


@dataclass(frozen=True)
class KnnInfomap:
    """The official flags keep their names: ``eps``: least cosine similarity of a link (official
    ``--eps 0.5``); ``k1``: neighbours searched per image, itself included (``--k1 15``); ``k2``: modules
    of at most ``k2`` images are outliers (``--k2 4``); ``camera_centering``: cluster the features with
    each camera's mean removed (``reid.clustering.camera_centering``; off in the official recipe)."""

    eps: float = 0.5
    k1: int = 15
    k2: int = 4
    camera_centering: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < float(self.eps) < 1.0:
            raise ValueError(
                f"model.clustering.eps={self.eps!r}: expected the least cosine similarity of a link, in "
                "(0, 1)"
            )
        if int(self.k1) < 2:
            raise ValueError(
                f"model.clustering.k1={self.k1!r}: expected an integer >= 2 (neighbours per image, itself "
                "included)"
            )
        if int(self.k2) < 0:
            raise ValueError(
                f"model.clustering.k2={self.k2!r}: expected an integer >= 0 (the largest module size counted "
                "as outliers)"
            )

    def __call__(self, features: Tensor, camids: Tensor | None = None) -> PseudoLabels:
        """Features ``[N, D]`` (L2-normalised) -> pseudo labels (module docstring); a set smaller than
        ``k1`` searches all ``N``."""
        features = features_to_cluster(features, camids, self.camera_centering)
        links = knn_links(features, min(int(self.k1), features.shape[0]), float(self.eps))
        return module_labels(infomap_modules(links), links.has_own_link, int(self.k2))

    def no_cluster_advice(self) -> str:
        """What to change when every image came out an outlier."""
        return (
            f"Infomap (model.clustering.eps={self.eps}, k1={self.k1}, k2={self.k2}): lower eps (the least "
            "similarity of a link) or k2"
        )
