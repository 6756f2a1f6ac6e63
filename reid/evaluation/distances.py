"""Query x gallery distances in row chunks, on whatever device the features live on.

``euclidean``: ``d(x, y) = ||x - y||_2``, computed as ``sqrt(max(|x|^2 + |y|^2 - 2 x.y, 0))``.
``cosine``: ``d(x, y) = 1 - x.y / (|x| |y|)``.
Both are "smaller is more similar"; ranking only depends on their order. :func:`top_k_stable` keeps the
k nearest of each row in the ranked list's order (ties: the earlier gallery item).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from reid.evaluation.config import METRICS


def _check_features(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features: expected [N, D] and [M, D], got {list(x.shape)} and {list(y.shape)}")


def squared_euclidean(x: Tensor, y: Tensor) -> Tensor:
    """``|x_i - y_j|^2`` for all pairs, clamped at 0 against cancellation."""
    _check_features(x, y)
    xx = x.pow(2).sum(1, keepdim=True)
    yy = y.pow(2).sum(1)
    out = torch.addmm(yy.expand(x.shape[0], -1), x, y.t(), beta=1.0, alpha=-2.0)
    return out.add_(xx).clamp_(min=0)


def pairwise_distance(x: Tensor, y: Tensor, metric: str) -> Tensor:
    """Dense ``[len(x), len(y)]`` distances; see the module docstring for the definitions."""
    if metric == "euclidean":
        return squared_euclidean(x, y).sqrt_()
    if metric == "cosine":
        _check_features(x, y)
        return torch.mm(F.normalize(x, dim=1), F.normalize(y, dim=1).t()).neg_().add_(1.0)
    raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")


def distance_chunks(
    query: Tensor, gallery: Tensor, metric: str, chunk_size: int
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, distances of queries start..start+chunk_size-1 to the whole gallery)``, so the
    full query x gallery matrix is never held."""
    _check_features(query, gallery)
    if metric == "cosine":  # normalise once, not per chunk
        query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
        for start in range(0, query.shape[0], chunk_size):
            yield start, torch.mm(query[start : start + chunk_size], gallery.t()).neg_().add_(1.0)
        return
    if metric != "euclidean":
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    for start in range(0, query.shape[0], chunk_size):
        yield start, squared_euclidean(query[start : start + chunk_size], gallery).sqrt_()


def top_k_stable(dist: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(indices, distances)`` ``[rows, min(k, cols)]`` of the ``k`` smallest of each row, ties broken by
    the earlier column (``torch.topk`` alone does not promise which of equal values it keeps)."""
    k = min(int(k), dist.shape[1])
    kth = torch.topk(dist, k, dim=1, largest=False).values[:, -1:]
    rows, cols = torch.nonzero(dist <= kth, as_tuple=True)  # every tie of the k-th value, columns ascending
    values = dist[rows, cols]
    order = torch.argsort(values, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]
    rows, cols, values = rows[order], cols[order], values[order]
    counts = torch.bincount(rows, minlength=dist.shape[0])
    position = torch.arange(rows.numel(), device=dist.device) - (torch.cumsum(counts, 0) - counts)[rows]
    keep = position < k
    indices = torch.zeros((dist.shape[0], k), dtype=torch.long, device=dist.device)
    distances = torch.zeros((dist.shape[0], k), dtype=dist.dtype, device=dist.device)
    indices[rows[keep], position[keep]] = cols[keep]
    distances[rows[keep], position[keep]] = values[keep]
    return indices, distances
