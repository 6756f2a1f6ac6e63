"""The k-reciprocal Jaccard distance of Cluster Contrast's clustering step, as a sparse graph.

Cluster Contrast (Dai et al. 2021, Sec. 3.1; official ``clustercontrast/utils/faiss_rerank.py``
``compute_jaccard_distance``, the same in damo-cv/TransReID-SSL and CASIA-IVA-Lab/PASS-reID) clusters
the L2-normalised training features with DBSCAN on the Jaccard distance of Zhong et al. (CVPR 2017,
Eq. 11-14) over the training set alone (no query/gallery split, no mix with the original distance).
The official function differs from ``reid.evaluation.rerank`` (test-time re-ranking) in three ways,
all kept here:

* the neighbour search returns ``k1`` items (self included), so ``R(i, k1)`` is taken from the first
  ``k1`` neighbours, not ``k1 + 1``; ``R(i, k1/2)`` from the first ``round(k1 / 2) + 1``;
* ``V_i(j) = softmax_j(-d(i, j))`` over ``R*(i)`` with ``d = 2 - 2 x_i . x_j`` (squared euclidean of
  unit vectors), not normalised by the row's largest distance;
* the result is ``d_J(i, j) = max(0, 1 - s / (2 - s))`` for every pair, ``s = sum_l min(V_i(l), V_j(l))``.

The official code holds dense ``N x N`` matrices (``V`` and the distances: 2 x 4.3 GB in float32 at
MSMT17's 32,621 images). Here the neighbour lists, ``R*``, ``V`` and its query expansion are the sparse,
memory-bounded steps of ``reid.evaluation.rerank``, and the distances are formed one block of rows at
a time, keeping only the pairs DBSCAN can use (``d_J <= max_distance``; pairs sharing no column of
``V`` have ``d_J = 1`` and are never stored).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse
from torch import Tensor

from reid.evaluation.rerank import (
    JACCARD_BLOCK_PAIRS,
    BaseDistance,
    SparseRows,
    expansion_vectors,
    jaccard_block,
    local_query_expansion,
    nearest_neighbours,
)

ROW_BLOCK = 1024
"""Rows whose distances to the whole set exist at once (4 B x N each: 130 MB at MSMT17 scale)."""


def _softmax_vectors(base: BaseDistance, neighbours: Tensor, k1: int) -> SparseRows:
    """Sparse ``V`` (rows sum to 1) of the official ``compute_jaccard_distance``: the softmax of
    ``-d`` over each expansion set."""

    def weigh(rows: Tensor, distances: Tensor, valid: Tensor) -> Tensor:
        return torch.softmax((-distances).masked_fill_(~valid, -torch.inf), dim=1)

    return expansion_vectors(base, neighbours, int(np.around(k1 / 2)) + 1, ROW_BLOCK, weigh)


def _column_index(v: SparseRows) -> SparseRows:
    """V grouped by column (``row`` holds the column, ``col`` the row of V): the inverted index."""
    order = torch.argsort(v.col, stable=True)
    return SparseRows.from_sorted(v.col[order], v.row[order], v.val[order], v.ptr.numel())


def jaccard_graph(
    features: Tensor,
    k1: int = 30,
    k2: int = 6,
    max_distance: float = 1.0,
    pair_budget: int = JACCARD_BLOCK_PAIRS,
) -> sparse.csr_matrix:
    """``[N, N]`` CSR matrix of the Jaccard distances ``<= max_distance`` (the diagonal, 0, included).

    ``features``: ``[N, D]`` training features, L2-normalised (the official model's output is); they are
    used as given. ``k1`` / ``k2``: official ``--k1 30 --k2 6``. Entries are float32; an explicitly stored
    0 is a neighbour at distance 0 for DBSCAN (``metric="precomputed"`` reads stored entries only).
    """
    if features.ndim != 2:
        raise ValueError(f"jaccard_graph: expected features [N, D], got shape {tuple(features.shape)}")
    n = features.shape[0]
    if not 1 <= k2 <= k1 or n < k1:
        raise ValueError(
            f"jaccard_graph: needs 1 <= k2 <= k1 <= N, got k1={k1}, k2={k2}, N={n} (model.clustering.k1/k2)"
        )
    features = features.detach().float()
    base = BaseDistance(features, "euclidean")
    neighbours, _ = nearest_neighbours(base, k1, ROW_BLOCK)
    v = _softmax_vectors(base, neighbours, k1)
    if k2 > 1:
        v = local_query_expansion(v, neighbours, k2)
    inverted = _column_index(v)
    rows, cols, vals = [], [], []
    for start in range(0, n, ROW_BLOCK):
        block = slice(start, min(start + ROW_BLOCK, n))
        distance = jaccard_block(v, inverted, block, n, pair_budget).clamp_(min=0.0)
        r, c = torch.nonzero(distance <= max_distance, as_tuple=True)
        rows.append((r + start).cpu().numpy())
        cols.append(c.cpu().numpy())
        vals.append(distance[r, c].cpu().numpy())
    data = np.concatenate(vals).astype(np.float32)
    indices = (np.concatenate(rows), np.concatenate(cols))
    return sparse.csr_matrix((data, indices), shape=(n, n))
