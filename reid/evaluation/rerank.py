"""Exact k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), sparse and memory-bounded.

Over the joint set P = queries + gallery (N items), with d the base distance (squared euclidean,
or ``1 - cos`` for the cosine metric) normalised by each row's maximum,
``d'(i, j) = d(i, j) / max_l d(i, l)``:

* ``N(i, k)``: the k+1 nearest items of i (itself included); ``R(i, k) = {j in N(i, k): i in N(j, k)}``.
* ``R*(i)``: ``R(i, k1)`` united with every ``R(c, round(k1/2))``, c in ``R(i, k1)``, that shares more
  than 2/3 of its items with ``R(i, k1)`` (Eq. 11).
* ``V_i(j) = exp(-d'(i, j)) / sum_{l in R*(i)} exp(-d'(i, l))`` on ``R*(i)``, 0 elsewhere (Eq. 12).
* local query expansion (k2 > 1): ``V_i <- mean_{t in N(i, k2 - 1)} V_t`` (Eq. 14).
* ``d_J(i, j) = 1 - s / (2 - s)``, ``s = sum_l min(V_i(l), V_j(l))`` (Eq. 13, rows of V sum to 1).
* ``d*(i, j) = (1 - lambda) d_J(i, j) + lambda d'(i, j)`` for query i, gallery j (Eq. 15).

Neighbour lists come from a chunked top-k, V is stored as sparse rows, and the Jaccard sums are
formed from an inverted index of V's gallery rows, so no N x N matrix ever exists; the final
distances are produced one block of queries at a time. V is kept in the feature dtype (the
reference code stores it as float16). Ties at the k-th neighbour are broken by ``torch.topk``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from reid.evaluation.config import RerankConfig

NEIGHBOUR_BLOCK_ELEMENTS = 1 << 26
"""Base distances held at once while searching neighbours (256 MiB of float32)."""


@dataclass(frozen=True)
class SparseRows:
    """Row-sorted sparse matrix: ``row``/``col``/``val`` of the non-zeros; ``ptr[i]`` = first entry of
    row i."""

    row: Tensor
    col: Tensor
    val: Tensor
    ptr: Tensor

    @staticmethod
    def from_sorted(row: Tensor, col: Tensor, val: Tensor, num_rows: int) -> SparseRows:
        counts = torch.bincount(row, minlength=num_rows)
        return SparseRows(row, col, val, torch.cumsum(counts, 0) - counts)


class BaseDistance:
    """The distance re-ranking starts from: squared euclidean, or ``1 - cos`` for ``cosine``."""

    def __init__(self, features: Tensor, metric: str) -> None:
        if metric == "cosine":
            features = F.normalize(features, dim=1)
        elif metric != "euclidean":
            raise ValueError(f"metric: expected 'euclidean' or 'cosine', got {metric!r}")
        self.features, self.metric = features, metric
        self.sq_norm = features.pow(2).sum(1)

    def block(self, rows: slice, cols: slice = slice(None)) -> Tensor:
        x, y = self.features[rows], self.features[cols]
        if self.metric == "cosine":
            return torch.mm(x, y.t()).neg_().add_(1.0)
        out = torch.addmm(self.sq_norm[cols].expand(x.shape[0], -1), x, y.t(), alpha=-2.0)
        return out.add_(self.sq_norm[rows][:, None]).clamp_(min=0)

    def to_members(self, rows: Tensor, members: Tensor) -> Tensor:
        """``[len(rows), W]`` distances from each row item to its ``members`` (ids >= 0)."""
        dot = torch.bmm(self.features[members], self.features[rows][:, :, None]).squeeze(2)
        if self.metric == "cosine":
            return dot.neg_().add_(1.0)
        return dot.mul_(-2.0).add_(self.sq_norm[members]).add_(self.sq_norm[rows][:, None]).clamp_(min=0)


def nearest_neighbours(base: BaseDistance, k: int, chunk_size: int) -> tuple[Tensor, Tensor]:
    """``[N, k]`` indices of the k nearest items of every item (ascending distance), and each row's
    maximum base distance.

    The distance matrix is symmetric, so only the blocks on and above the diagonal are computed;
    each gives top-k candidates to its rows and, transposed, to its columns (half the multiply-adds
    of a full pass). Every row keeps a running top-k that each block's candidates are merged into in
    place, so the search holds ``O(N k)`` memory plus one block, whatever N (keeping all blocks'
    candidates for one final selection would cost ``O(N^2 k / block)`` and fragment the heap).
    """
    n, device, dtype = base.features.shape[0], base.features.device, base.features.dtype
    size = max(k, min(chunk_size, int(NEIGHBOUR_BLOCK_ELEMENTS**0.5)))
    best_val = torch.full((n, k), torch.inf, dtype=dtype, device=device)
    best_idx = torch.full((n, k), -1, dtype=torch.long, device=device)
    row_max = torch.full((n,), -torch.inf, dtype=dtype, device=device)

    def merge(rows: slice, block: Tensor, col_offset: int) -> None:
        val, idx = torch.topk(block, min(k, block.shape[1]), dim=1, largest=False, sorted=False)
        cand_val = torch.cat((best_val[rows], val), 1)
        cand_idx = torch.cat((best_idx[rows], idx.add_(col_offset)), 1)
        keep_val, pick = torch.topk(cand_val, k, dim=1, largest=False, sorted=False)
        best_val[rows] = keep_val
        best_idx[rows] = cand_idx.gather(1, pick)
        row_max[rows] = torch.maximum(row_max[rows], block.amax(1))

    for sa in range(0, n, size):
        rows = slice(sa, sa + size)
        for sb in range(sa, n, size):
            cols = slice(sb, sb + size)
            block = base.block(rows, cols)
            merge(rows, block, sb)
            if sb != sa:
                merge(cols, block.t(), sa)
    order = torch.argsort(best_val, dim=1, stable=True)
    return best_idx.gather(1, order), row_max


def _reciprocal(neighbours: Tensor, rows: Tensor) -> Tensor:
    """``[len(rows), k]``: whether ``rows[r]`` is among the neighbours of its a-th neighbour."""
    return (neighbours[neighbours[rows]] == rows[:, None, None]).any(-1)


def _expansion_sets(neighbours: Tensor, half: int, rows: Tensor) -> Tensor:
    """``R*(i)`` of Eq. 11 for ``rows`` as ``[len(rows), width]`` item ids, -1 = empty, no repeats."""
    kr = torch.where(_reciprocal(neighbours, rows), neighbours[rows], -1)
    cand = neighbours[rows]  # R(i, k1) is a subset of these
    half_nb = neighbours[:, :half]
    half_sets = torch.where(_reciprocal(half_nb, cand.flatten()).view(*cand.shape, half), half_nb[cand], -1)
    half_size = (half_sets >= 0).sum(-1)
    shared = ((half_sets[..., None] == kr[:, None, None, :]) & (half_sets[..., None] >= 0)).any(-1).sum(-1)
    accept = (kr >= 0) & (shared.double() > (2.0 / 3.0) * half_size.double())
    members = torch.cat([kr, torch.where(accept[..., None], half_sets, -1).flatten(1)], 1)
    members, _ = torch.sort(members, dim=1)
    repeat = torch.zeros_like(members, dtype=torch.bool)
    repeat[:, 1:] = members[:, 1:] == members[:, :-1]
    return members.masked_fill_(repeat, -1)


def k_reciprocal_vectors(
    base: BaseDistance, neighbours: Tensor, row_max: Tensor, chunk_size: int
) -> SparseRows:
    """Sparse ``V`` of Eq. 12 (rows sum to 1), built row block by row block."""
    k1 = neighbours.shape[1] - 1
    half = round(k1 / 2) + 1  # np.around in the reference rounds half to even, as round() does
    n, device = neighbours.shape[0], neighbours.device
    parts = []
    step = max(1, min(chunk_size, 1024))
    for start in range(0, n, step):
        rows = torch.arange(start, min(start + step, n), device=device)
        members = _expansion_sets(neighbours, half, rows)
        members, _ = torch.sort(members, dim=1, descending=True)  # ids first, -1 padding last
        members = members[:, : int((members >= 0).sum(1).max())]
        valid = members >= 0
        weight = torch.exp(-base.to_members(rows, members.clamp(min=0)) / row_max[rows][:, None])
        weight = weight.masked_fill_(~valid, 0.0)
        weight = weight / weight.sum(1, keepdim=True)
        r, slot = torch.nonzero(valid, as_tuple=True)
        i, j = rows[r], members[r, slot]
        parts.append((i, j, weight[r, slot]))
    row, col, val = (torch.cat(p) for p in zip(*parts))
    return SparseRows.from_sorted(row, col, val, n)


def local_query_expansion(v: SparseRows, neighbours: Tensor, k2: int) -> SparseRows:
    """Eq. 14: each row of V replaced by the mean of the rows of its k2 nearest items."""
    n = neighbours.shape[0]
    sources = neighbours[:, :k2].reshape(-1)
    targets = torch.arange(n, device=neighbours.device).repeat_interleave(k2)
    counts = torch.bincount(v.row, minlength=n)[sources]
    target = targets.repeat_interleave(counts)
    within = torch.arange(target.numel(), device=target.device) - (
        torch.cumsum(counts, 0) - counts
    ).repeat_interleave(counts)
    entry = v.ptr[sources].repeat_interleave(counts) + within
    key = target * n + v.col[entry]
    unique_key, inverse = torch.unique(key, sorted=True, return_inverse=True)
    val = torch.zeros(unique_key.numel(), dtype=v.val.dtype, device=key.device).index_add_(
        0, inverse, v.val[entry]
    )
    return SparseRows.from_sorted(unique_key // n, unique_key % n, val / k2, n)


def _gallery_columns(v: SparseRows, num_query: int) -> SparseRows:
    """Inverted index: V's gallery rows grouped by column (``row`` holds the column, ``col`` the
    gallery position)."""
    keep = v.row >= num_query
    col, gal, val = v.col[keep], v.row[keep] - num_query, v.val[keep]
    order = torch.argsort(col, stable=True)
    return SparseRows.from_sorted(col[order], gal[order], val[order], v.ptr.numel())


def jaccard_block(v: SparseRows, inverted: SparseRows, rows: slice, num_gallery: int) -> Tensor:
    """Eq. 13 for query rows ``rows`` against the whole gallery: ``[rows, num_gallery]``."""
    first, last = (
        int(v.ptr[rows.start]),
        int(v.ptr[rows.stop]) if rows.stop < v.ptr.numel() else v.row.numel(),
    )
    q_row, q_col, q_val = v.row[first:last] - rows.start, v.col[first:last], v.val[first:last]
    col_counts = torch.bincount(inverted.row, minlength=v.ptr.numel())[q_col]
    pair_q = torch.arange(q_row.numel(), device=q_row.device).repeat_interleave(col_counts)
    within = (
        torch.arange(pair_q.numel(), device=q_row.device) - (torch.cumsum(col_counts, 0) - col_counts)[pair_q]
    )
    entry = inverted.ptr[q_col][pair_q] + within
    shared = torch.minimum(q_val[pair_q], inverted.val[entry])
    num_rows = rows.stop - rows.start
    s = torch.zeros(num_rows * num_gallery, dtype=v.val.dtype, device=q_row.device)
    s.index_add_(0, q_row[pair_q] * num_gallery + inverted.col[entry], shared)
    s = s.view(num_rows, num_gallery)
    return 1.0 - s / (2.0 - s)


def rerank_distance_chunks(
    query: Tensor, gallery: Tensor, config: RerankConfig, metric: str, chunk_size: int
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, d*)`` for blocks of ``chunk_size`` queries against the whole gallery."""
    features = torch.cat([query, gallery], 0)
    n, num_query, num_gallery = features.shape[0], query.shape[0], gallery.shape[0]
    if n <= config.k1:
        raise ValueError(f"eval.rerank.k1={config.k1}: needs more than k1 items, got {n} query + gallery")
    base = BaseDistance(features, metric)
    neighbours, row_max = nearest_neighbours(base, config.k1 + 1, chunk_size)
    v = k_reciprocal_vectors(base, neighbours, row_max, chunk_size)
    if config.k2 > 1:
        v = local_query_expansion(v, neighbours, config.k2)
    inverted = _gallery_columns(v, num_query)
    for start in range(0, num_query, chunk_size):
        rows = slice(start, min(start + chunk_size, num_query))
        jaccard = jaccard_block(v, inverted, rows, num_gallery)
        original = base.block(rows, slice(num_query, n)).div_(row_max[rows][:, None])
        yield start, jaccard.mul_(1.0 - config.lambda_value).add_(original, alpha=config.lambda_value)
