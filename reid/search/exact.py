"""Exact k-nearest gallery rows of each query, in memory-bounded blocks.

The distance is the evaluation's (``reid.evaluation.distances.pairwise_distance``: ``euclidean``
``||q - g||`` or ``cosine`` ``1 - cos(q, g)``, smaller is nearer). The query rows are taken
``query_chunk`` at a time and the gallery ``gallery_chunk`` rows at a time; each block's k smallest
distances are merged into the running k best of its queries, so no more than
``query_chunk x (gallery_chunk + k)`` distances are held, however large the gallery. The gallery may be
an ``np.memmap`` (``np.load(path, mmap_mode="r")``): a block is read from disk only when it is ranked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from reid.evaluation.config import METRICS
from reid.evaluation.distances import pairwise_distance, top_k_stable

Features = Tensor | np.ndarray


@dataclass(frozen=True)
class TopK:
    """The ``k`` nearest gallery rows of each query, nearest first: ``indices`` int64 ``[Q, k]`` and
    their ``distances`` float32 ``[Q, k]`` (``k`` is at most the gallery size). Equal distances are in
    gallery order, as the evaluation ranks them (``reid.evaluation.rank``)."""

    indices: Tensor
    distances: Tensor


def _rows(features: Features, start: int, stop: int) -> Tensor:
    block = features[start:stop]
    if isinstance(block, np.ndarray):
        block = torch.from_numpy(np.array(block, dtype=np.float32))  # a copy: memmaps are read-only
    return block.float()


def gallery_blocks(gallery: Features, block: int) -> Iterator[tuple[int, Tensor]]:
    """``(first row, rows [b, D] float32)`` of ``gallery`` in blocks of ``block`` rows."""
    for start in range(0, len(gallery), block):
        yield start, _rows(gallery, start, start + block)


def _check(query: Features, gallery: Features, k: int, metric: str, chunks: tuple[int, int]) -> None:
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"search: expected query [Q, D] and gallery [N, D] features, got {list(query.shape)} and "
            f"{list(gallery.shape)}"
        )
    if len(gallery) == 0:
        raise ValueError("search: the gallery is empty")
    if k < 1:
        raise ValueError(f"search: top-k must be >= 1, got {k}")
    if metric not in METRICS:
        raise ValueError(f"search: metric must be one of {METRICS}, got {metric!r}")
    if min(chunks) < 1:
        raise ValueError(f"search: query_chunk and gallery_chunk must be >= 1, got {chunks}")


def exact_top_k(
    query: Features,
    gallery: Features,
    k: int,
    metric: str,
    query_chunk: int = 1024,
    gallery_chunk: int = 65536,
) -> TopK:
    """The ``min(k, N)`` nearest of the ``N`` gallery rows for every query row (module docstring)."""
    _check(query, gallery, k, metric, (query_chunk, gallery_chunk))
    k = min(k, len(gallery))
    all_indices, all_distances = [], []
    for q_start in range(0, len(query), query_chunk):
        q = _rows(query, q_start, q_start + query_chunk)
        best_d = torch.empty(len(q), 0)
        best_i = torch.empty(len(q), 0, dtype=torch.long)
        for g_start, g in gallery_blocks(gallery, gallery_chunk):
            block_i, block_d = top_k_stable(pairwise_distance(q, g, metric), k)
            # the running best hold only earlier rows: a stable sort keeps (distance, row) order
            merged_d = torch.cat([best_d, block_d], dim=1)
            merged_i = torch.cat([best_i, block_i + g_start], dim=1)
            order = torch.sort(merged_d, dim=1, stable=True).indices[:, :k]
            best_d, best_i = merged_d.gather(1, order), merged_i.gather(1, order)
        all_distances.append(best_d)
        all_indices.append(best_i)
    return TopK(torch.cat(all_indices), torch.cat(all_distances))
