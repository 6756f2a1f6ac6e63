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
distances are produced one block of queries at a time, and within a block the Jaccard pairs are
formed a fixed budget at a time, counted from V's measured non-zeros (rows hold ~500 of them after
the k2 expansion with k1 50, k2 15), so memory does not grow with k1 and k2. V is kept in the
feature dtype (the reference code stores it as float16). Ties at the k-th neighbour are broken by
``torch.topk``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from reid.evaluation.config import RerankConfig

NEIGHBOUR_BLOCK_ELEMENTS = 1 << 26
"""Base distances held at once while searching neighbours (256 MiB of float32)."""

EXPANSION_BLOCK_ENTRIES = 1 << 23
"""Source entries gathered at once by the local query expansion (Eq. 14), about 0.5 GiB of
temporaries; with k1 50, k2 15 a row gathers ~1,500 of them (measured at Market-1501 scale: 29 M in
all, so ~140 M at MSMT17 scale)."""

JACCARD_BLOCK_PAIRS = 1 << 24
"""(query entry, gallery entry) pairs formed at once by the Jaccard step, about 0.7 GiB of index and
value temporaries (~40 bytes a pair). With k1 50, k2 15 a query row has ~220k pairs at Market-1501
scale (measured), so blocks sized by query rows are not bounded (2,048 rows = ~450 M pairs)."""


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


def reciprocal_mask(neighbours: Tensor, step: int) -> Tensor:
    """``[N, k]`` for every item i: whether i is among the k neighbours of its a-th neighbour, so
    ``R(i, k - 1)`` = the masked row of ``neighbours``. Computed once, ``step`` rows at a time."""
    n = neighbours.shape[0]
    out = torch.empty(neighbours.shape, dtype=torch.bool, device=neighbours.device)
    for start in range(0, n, step):
        rows = torch.arange(start, min(start + step, n), device=neighbours.device)
        out[rows] = (neighbours[neighbours[rows]] == rows[:, None, None]).any(-1)
    return out


def _count_members(sets: Tensor, of: Tensor) -> Tensor:
    """``[R, C]``: how many ids (>= 0) of each ``sets[r, c, :]`` occur in ``of[r]`` (ids unique, -1 =
    empty), by binary search in each sorted row of ``of``."""
    ref, _ = torch.sort(of, dim=1)
    flat = sets.flatten(1)
    pos = torch.searchsorted(ref, flat).clamp_(max=ref.shape[1] - 1)
    found = (ref.gather(1, pos) == flat) & (flat >= 0)
    return found.view(sets.shape).sum(-1)


def expansion_sets(neighbours: Tensor, half_nb: Tensor, masks: tuple[Tensor, Tensor], rows: Tensor) -> Tensor:
    """``R*(i)`` of Eq. 11 for ``rows`` as ``[len(rows), width]`` item ids, -1 = empty, no repeats;
    ``masks`` = the ``reciprocal_mask`` of ``neighbours`` and of ``half_nb``."""
    full_mask, half_mask = masks
    cand = neighbours[rows]  # R(i, k1) is a subset of these
    kr = torch.where(full_mask[rows], cand, -1)
    half_sets = torch.where(half_mask[cand], half_nb[cand], -1)
    half_size = (half_sets >= 0).sum(-1)
    shared = _count_members(half_sets, kr)
    accept = (kr >= 0) & (shared.double() > (2.0 / 3.0) * half_size.double())
    members = torch.cat([kr, torch.where(accept[..., None], half_sets, -1).flatten(1)], 1)
    members, _ = torch.sort(members, dim=1)
    repeat = torch.zeros_like(members, dtype=torch.bool)
    repeat[:, 1:] = members[:, 1:] == members[:, :-1]
    return members.masked_fill_(repeat, -1)


RowWeights = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(rows [R], distances [R, W], valid [R, W]) -> weights [R, W]``: each row's weights over its
expansion set (``valid`` marks the members; padding slots are ignored)."""


def expansion_vectors(
    base: BaseDistance, neighbours: Tensor, half: int, step: int, weigh: RowWeights
) -> SparseRows:
    """Sparse rows over each item's expansion set ``R*(i)`` (Eq. 11), weighted by ``weigh`` from the
    base distances to the members, built ``step`` rows at a time; ``half``: the neighbours of the
    half-size reciprocal sets (``round(k1 / 2) + 1`` columns)."""
    n, device = neighbours.shape[0], neighbours.device
    parts = []
    half_nb = neighbours[:, :half].contiguous()
    masks = reciprocal_mask(neighbours, step), reciprocal_mask(half_nb, step)
    for start in range(0, n, step):
        rows = torch.arange(start, min(start + step, n), device=device)
        members = expansion_sets(neighbours, half_nb, masks, rows)
        members, _ = torch.sort(members, dim=1, descending=True)  # ids first, -1 padding last
        members = members[:, : int((members >= 0).sum(1).max())]
        valid = members >= 0
        weight = weigh(rows, base.to_members(rows, members.clamp(min=0)), valid)
        r, slot = torch.nonzero(valid, as_tuple=True)
        parts.append((rows[r], members[r, slot], weight[r, slot]))
    row, col, val = (torch.cat(p) for p in zip(*parts, strict=True))
    return SparseRows.from_sorted(row, col, val, n)


def k_reciprocal_vectors(
    base: BaseDistance, neighbours: Tensor, row_max: Tensor, chunk_size: int
) -> SparseRows:
    """Sparse ``V`` of Eq. 12 (rows sum to 1): ``exp(-d / max_j d_ij)`` over ``R*(i)``, normalised."""
    k1 = neighbours.shape[1] - 1
    half = round(k1 / 2) + 1  # np.around in the reference rounds half to even, as round() does

    def weigh(rows: Tensor, distances: Tensor, valid: Tensor) -> Tensor:
        weight = torch.exp(-distances / row_max[rows][:, None]).masked_fill_(~valid, 0.0)
        return weight / weight.sum(1, keepdim=True)

    return expansion_vectors(base, neighbours, half, max(1, min(chunk_size, 1024)), weigh)


def row_blocks(per_row: Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, stop)`` row ranges covering all rows, each holding at most ``budget`` of
    the rows' ``per_row`` items (a single row over the budget gets a block of its own)."""
    if budget < 1:
        raise ValueError(f"rerank expansion budget: expected an integer >= 1, got {budget!r}")
    ends, n, blocks, start = torch.cumsum(per_row, 0), per_row.numel(), [], 0
    while start < n:
        before = int(ends[start - 1]) if start else 0
        stop = int(torch.searchsorted(ends, before + budget, right=True))
        blocks.append((start, max(stop, start + 1)))
        start = blocks[-1][1]
    return blocks


def local_query_expansion(
    v: SparseRows, neighbours: Tensor, k2: int, budget: int = EXPANSION_BLOCK_ENTRIES
) -> SparseRows:
    """Eq. 14: each row of V replaced by the mean of the rows of its k2 nearest items.

    A row gathers the entries of its k2 source rows before merging equal columns; rows are expanded
    in blocks of at most ``budget`` gathered entries (counted from V's row lengths), which bounds
    the step at ``O(budget)`` temporaries besides V itself whatever k1 and k2.
    """
    n = neighbours.shape[0]
    row_nnz = torch.bincount(v.row, minlength=n)
    sources = neighbours[:, :k2]
    parts = []
    for start, stop in row_blocks(row_nnz[sources].sum(1), budget):
        src = sources[start:stop].reshape(-1)
        counts = row_nnz[src]
        target = torch.arange(start, stop, device=src.device).repeat_interleave(k2).repeat_interleave(counts)
        within = torch.arange(target.numel(), device=src.device) - (
            torch.cumsum(counts, 0) - counts
        ).repeat_interleave(counts)
        entry = v.ptr[src].repeat_interleave(counts) + within
        del within
        key = target.mul_(n).add_(v.col[entry])
        unique_key, inverse = torch.unique(key, sorted=True, return_inverse=True)
        del key
        val = torch.zeros(unique_key.numel(), dtype=v.val.dtype, device=src.device)
        parts.append((unique_key, val.index_add_(0, inverse, v.val[entry])))
    unique_key, val = (torch.cat(p) for p in zip(*parts))
    return SparseRows.from_sorted(unique_key // n, unique_key % n, val / k2, n)


def _gallery_columns(v: SparseRows, num_query: int) -> SparseRows:
    """Inverted index: V's gallery rows grouped by column (``row`` holds the column, ``col`` the
    gallery position)."""
    keep = v.row >= num_query
    col, gal, val = v.col[keep], v.row[keep] - num_query, v.val[keep]
    order = torch.argsort(col, stable=True)
    return SparseRows.from_sorted(col[order], gal[order], val[order], v.ptr.numel())


def pair_ranges(total: int, budget: int) -> list[tuple[int, int]]:
    """Consecutive ``[a, b)`` ranges covering ``[0, total)`` pairs, none longer than ``budget``."""
    if budget < 1:
        raise ValueError(f"rerank pair budget: expected an integer >= 1, got {budget!r}")
    return [(a, min(a + budget, total)) for a in range(0, total, budget)]


def pairs_of_range(counts: Tensor, ends: Tensor, a: int, b: int) -> Tensor:
    """Owner entry of each pair ``a..b-1`` when entry e owns pairs ``[ends[e] - counts[e], ends[e])``
    (``ends`` = cumsum of ``counts``): exactly ``b - a`` ids, so a range may start or stop inside an
    entry and a piece never holds more pairs than asked for."""
    e0 = int(torch.searchsorted(ends, a, right=True))
    e1 = int(torch.searchsorted(ends, b - 1, right=True))
    local = counts[e0 : e1 + 1].clone()
    local[0] -= a - int(ends[e0] - counts[e0])
    local[-1] -= int(ends[e1]) - b
    return torch.arange(e0, e1 + 1, device=counts.device).repeat_interleave(local, output_size=b - a)


def jaccard_block(
    v: SparseRows,
    inverted: SparseRows,
    rows: slice,
    num_gallery: int,
    pair_budget: int = JACCARD_BLOCK_PAIRS,
) -> Tensor:
    """Eq. 13 for query rows ``rows`` against the whole gallery: ``[rows, num_gallery]``.

    ``s(i, j)`` sums ``min(V_i(l), V_j(l))`` over one pair per (query entry ``(i, l)``, gallery entry
    ``(j, l)``) sharing a column l. A query entry has as many pairs as column l has gallery entries,
    so the block's pair count, ``sum_l nnz_col(l)`` over its query entries, is measured from V before
    any pair exists; the pairs are then formed ``pair_budget`` at a time (a piece may split one
    entry's pairs), which bounds the step's memory whatever k1, k2 and the row density. Pieces are
    added in pair order, the summation order of one unsplit pass.
    """
    first, last = (
        int(v.ptr[rows.start]),
        int(v.ptr[rows.stop]) if rows.stop < v.ptr.numel() else v.row.numel(),
    )
    q_col, q_val = v.col[first:last], v.val[first:last]
    col_nnz = torch.diff(inverted.ptr, append=inverted.ptr.new_tensor([inverted.row.numel()]))
    counts = col_nnz[q_col]
    ends = torch.cumsum(counts, 0)
    offset = inverted.ptr[q_col] - (ends - counts)  # pair p of entry e is inverted entry offset[e] + p
    target = (v.row[first:last] - rows.start) * num_gallery
    num_rows = rows.stop - rows.start
    s = torch.zeros(num_rows * num_gallery, dtype=v.val.dtype, device=q_col.device)
    total = int(ends[-1]) if ends.numel() else 0
    for a, b in pair_ranges(total, pair_budget):
        owner = pairs_of_range(counts, ends, a, b)
        entry = offset[owner].add_(torch.arange(a, b, device=owner.device))
        shared = torch.minimum(q_val[owner], inverted.val[entry])
        s.index_add_(0, target[owner].add_(inverted.col[entry]), shared)
        del owner, entry, shared
    s = s.view(num_rows, num_gallery)
    out = torch.rsub(s, 2.0)
    return torch.div(s, out, out=out).neg_().add_(1.0)  # 1 - s / (2 - s), one extra block


def rerank_distance_chunks(
    query: Tensor,
    gallery: Tensor,
    config: RerankConfig,
    metric: str,
    chunk_size: int,
    pair_budget: int = JACCARD_BLOCK_PAIRS,
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, d*)`` for blocks of ``chunk_size`` queries against the whole gallery; the
    Jaccard step forms at most ``pair_budget`` column-sharing pairs at once (see ``jaccard_block``)."""
    features = torch.cat([query, gallery], 0)
    n, num_query, num_gallery = features.shape[0], query.shape[0], gallery.shape[0]
    if n <= config.k1:
        raise ValueError(f"eval.rerank.k1={config.k1}: needs more than k1 items, got {n} query + gallery")
    base = BaseDistance(features, metric)
    neighbours, row_max = nearest_neighbours(base, config.k1 + 1, chunk_size)
    v = k_reciprocal_vectors(base, neighbours, row_max, chunk_size)
    if config.k2 > 1:
        v = local_query_expansion(v, neighbours, config.k2, EXPANSION_BLOCK_ENTRIES)
    inverted = _gallery_columns(v, num_query)
    for start in range(0, num_query, chunk_size):
        rows = slice(start, min(start + chunk_size, num_query))
        jaccard = jaccard_block(v, inverted, rows, num_gallery, pair_budget)
        original = base.block(rows, slice(num_query, n)).div_(row_max[rows][:, None])
        yield start, jaccard.mul_(1.0 - config.lambda_value).add_(original, alpha=config.lambda_value)
