"""CMC, mAP and mINP from query x gallery distances, one block of queries at a time.

Protocol (Market-1501 / DukeMTMC / MSMT17 / VeRi): for each query the gallery items with the same
pid *and* the same camera are removed; gallery items with a negative pid (junk, -1) are removed for
every query; distractors (pid 0) are ordinary negatives. A query without any remaining true match is
excluded from every mean and counted in ``num_queries - num_valid_queries``.

Order and ties: the ranked list of a query is its valid gallery sorted by (distance, gallery
position), i.e. a *stable* sort; among equal distances the earlier gallery item comes first.

With the true matches of a query sorted, ``p_1 < ... < p_m`` and their 1-based ranks ``r_1 < ... < r_m``:
``AP = (1/m) sum_k k / r_k``; ``CMC@n = [r_1 <= n]``; ``INP = m / r_m`` (Ye et al., TPAMI 2021).

No full argsort is needed: ``r_k = k + #{valid negatives before p_k}``. Items farther than the
farthest match never matter; the others are located among the (few, sorted) matches by one
``searchsorted`` on an int64 key packing (row, distance, gallery position), which makes the tie
handling exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

RANK_BLOCK_ELEMENTS = 1 << 23
"""Distances touched per vectorised step; bounds the temporaries of the rank computation."""


@dataclass(frozen=True, eq=False)
class RankResult:
    """Metrics of one evaluation (compare field by field: ``cmc`` is a tensor).

    ``mAP``, ``mINP`` and ``cmc`` (length ``max_rank``, ``cmc[n-1]`` =
    CMC@n) are fractions in [0, 1] averaged over the ``num_valid_queries`` queries with a match."""

    mAP: float  # noqa: N815 (contract name)
    mINP: float  # noqa: N815 (contract name)
    cmc: Tensor
    num_valid_queries: int
    num_queries: int

    def as_dict(self, ranks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
        """``{"mAP", "R1", "R5", "R10", "mINP"}`` in percent (the ranks are configurable)."""
        out = {"mAP": 100.0 * self.mAP}
        for rank in ranks:
            if not 1 <= rank <= len(self.cmc):
                raise ValueError(f"rank {rank} outside the computed CMC (max_rank={len(self.cmc)})")
            out[f"R{rank}"] = 100.0 * float(self.cmc[rank - 1])
        out["mINP"] = 100.0 * self.mINP
        return out


@dataclass(frozen=True)
class _Matches:
    """True matches and same-camera exclusions of a block of queries."""

    row: Tensor  # [M] true matches (same pid, other camera), any order
    col: Tensor  # [M]
    excluded_row: Tensor  # [E] same pid and same camera
    excluded_col: Tensor  # [E]


class _GalleryGroups:
    """Gallery columns grouped by pid (junk removed), so the matches of a query are found without
    comparing its pid with the whole gallery."""

    def __init__(self, gallery_pids: Tensor, gallery_camids: Tensor) -> None:
        keep = gallery_pids >= 0
        self.keep_cols = None if bool(keep.all()) else torch.nonzero(keep).squeeze(1)
        pids, cams = gallery_pids[keep], gallery_camids[keep]
        if pids.numel() == 0:
            raise ValueError("gallery: no labelled item (every gallery pid is negative, i.e. junk)")
        order = torch.argsort(pids, stable=True)
        self.members = order
        self.member_cams = cams[order]
        self.pids, counts = torch.unique_consecutive(pids[order], return_counts=True)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts

    def to(self, device: torch.device) -> None:
        for name in ("members", "member_cams", "pids", "counts", "starts"):
            setattr(self, name, getattr(self, name).to(device))

    def matches(self, query_pids: Tensor, query_camids: Tensor) -> _Matches:
        device = query_pids.device
        pos = torch.searchsorted(self.pids, query_pids).clamp(max=self.pids.numel() - 1)
        group_count = torch.where(self.pids[pos] == query_pids, self.counts[pos], 0)
        rows = torch.repeat_interleave(torch.arange(query_pids.numel(), device=device), group_count)
        within = (
            torch.arange(rows.numel(), device=device) - (torch.cumsum(group_count, 0) - group_count)[rows]
        )
        member = self.starts[pos][rows] + within
        cols, same_cam = self.members[member], self.member_cams[member] == query_camids[rows]
        return _Matches(rows[~same_cam], cols[~same_cam], rows[same_cam], cols[same_cam])


class _OrderKey:
    """Packs (row, distance, column) into one int64 whose order is the ranked-list order of a block:
    ``row << (32 + b) | code(distance) << b | column`` with ``b`` bits for columns. ``code`` is the
    IEEE-754 bit pattern made monotone (float16/bfloat16/float32) or, for float64, the position among
    the block's distinct candidate distances; both preserve ``<`` and ``==`` exactly."""

    def __init__(self, num_cols: int, candidates: Tensor) -> None:
        self.col_bits = max(1, (num_cols - 1).bit_length())
        self.distinct = torch.unique(candidates) if candidates.dtype == torch.float64 else None

    @staticmethod
    def max_rows(num_cols: int) -> int:
        return 1 << (31 - max(1, (num_cols - 1).bit_length()))

    def __call__(self, rows: Tensor, dist: Tensor, cols: Tensor) -> Tensor:
        if self.distinct is not None:
            code = torch.searchsorted(self.distinct, dist)
        else:
            bits = (dist.float() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
            negative = bits < 0
            if bool(negative.any()):  # negative floats: larger magnitude = smaller value
                bits = torch.where(negative, bits ^ 0x7FFFFFFF, bits)
            code = bits.long().add_(1 << 31)
        return code.mul_(1 << self.col_bits).add_(cols).add_(rows << (32 + self.col_bits))


def _block_ranks(dist: Tensor, m: _Matches) -> tuple[Tensor, Tensor]:
    """Number of true matches per query, and the 1-based ranks of the matches among the valid
    gallery, flat in (row, rank) order."""
    c, device = dist.shape[0], dist.device
    match_dist = dist[m.row, m.col]
    last = torch.full((c,), -torch.inf, dtype=dist.dtype, device=device)
    last.scatter_reduce_(0, m.row, match_dist, reduce="amax")
    # Only items up to the farthest match can precede a match.
    flat = torch.nonzero((dist <= last[:, None]).view(-1)).squeeze(1)
    cand_dist = dist.reshape(-1)[flat]
    cand_row = flat // dist.shape[1]
    cand_col = flat - cand_row * dist.shape[1]
    key = _OrderKey(dist.shape[1], cand_dist)
    match_key, _ = torch.sort(key(m.row, match_dist, m.col))
    counts = torch.bincount(m.row, minlength=c)
    starts = torch.cumsum(counts, 0) - counts
    match_row = torch.repeat_interleave(torch.arange(c, device=device), counts)
    k = torch.arange(match_row.numel(), device=device) - starts[match_row]

    # hist[bin_start[r] + j]: candidates of row r preceded by exactly j of its matches.
    bin_start = starts + torch.arange(c, device=device)
    hist = torch.zeros(match_key.numel() + c, dtype=torch.long, device=device)
    preceding = torch.searchsorted(match_key, key(cand_row, cand_dist, cand_col)) - starts[cand_row]
    hist.index_add_(0, bin_start[cand_row] + preceding, torch.ones_like(preceding))
    # The candidates include the matches themselves (match k is preceded by k matches) ...
    hist.index_add_(0, bin_start[match_row] + k, torch.ones_like(k), alpha=-1)
    # ... and the same-pid same-camera items up to the farthest match.
    ex_dist = dist[m.excluded_row, m.excluded_col]
    inside = ex_dist <= last[m.excluded_row]
    ex_row, ex_col, ex_dist = m.excluded_row[inside], m.excluded_col[inside], ex_dist[inside]
    ex_preceding = torch.searchsorted(match_key, key(ex_row, ex_dist, ex_col)) - starts[ex_row]
    hist.index_add_(0, bin_start[ex_row] + ex_preceding, torch.ones_like(ex_preceding), alpha=-1)

    cum = torch.cumsum(hist, 0)
    row_base = torch.where(bin_start > 0, cum[(bin_start - 1).clamp(min=0)], 0)
    negatives_before = cum[bin_start[match_row] + k] - row_base[match_row]
    return counts, k + 1 + negatives_before


class RankAccumulator:
    """Per-query AP, INP and first-match rank, filled block by block from distance rows."""

    def __init__(
        self, query_pids: Tensor, gallery_pids: Tensor, query_camids: Tensor, gallery_camids: Tensor
    ) -> None:
        _check_labels(query_pids, query_camids, "query")
        _check_labels(gallery_pids, gallery_camids, "gallery")
        self.query_pids, self.query_camids = query_pids.long(), query_camids.long()
        self.gallery = _GalleryGroups(gallery_pids.long(), gallery_camids.long())
        self.num_gallery = gallery_pids.numel()
        q = query_pids.numel()
        self.ap = torch.zeros(q, dtype=torch.float64)
        self.inp = torch.zeros(q, dtype=torch.float64)
        self.first_rank = torch.zeros(q, dtype=torch.long)  # 0 = no valid match
        self.seen = torch.zeros(q, dtype=torch.bool)

    def add(self, start: int, dist: Tensor) -> None:
        """Consume the distance rows of queries ``start .. start + dist.shape[0] - 1``."""
        if dist.ndim != 2 or dist.shape[1] != self.num_gallery:
            raise ValueError(f"distance block: expected [rows, {self.num_gallery}], got {list(dist.shape)}")
        if self.gallery.keep_cols is not None:
            dist = dist.index_select(1, self.gallery.keep_cols.to(dist.device))
        step = max(1, min(RANK_BLOCK_ELEMENTS // max(dist.shape[1], 1), _OrderKey.max_rows(dist.shape[1])))
        for lo in range(0, dist.shape[0], step):
            self._add_block(start + lo, dist[lo : lo + step])

    def _add_block(self, start: int, dist: Tensor) -> None:
        device = dist.device
        q = slice(start, start + dist.shape[0])
        if self.gallery.members.device != device:
            self.gallery.to(device)
        m = self.gallery.matches(self.query_pids[q].to(device), self.query_camids[q].to(device))
        self.seen[q] = True
        if m.row.numel() == 0:  # no query of this block has a valid match
            return
        counts, ranks = _block_ranks(dist, m)
        starts = torch.cumsum(counts, 0) - counts
        rows = torch.repeat_interleave(torch.arange(dist.shape[0], device=device), counts)
        k = (torch.arange(rows.numel(), device=device) - starts[rows] + 1).double()
        precision_sum = torch.zeros(dist.shape[0], dtype=torch.float64, device=device)
        precision_sum.index_add_(0, rows, k / ranks.double())
        valid = counts > 0
        last_rank = ranks[(starts + counts - 1).clamp(min=0)].double()
        first_rank = ranks[starts.clamp(max=ranks.numel() - 1)]
        self.ap[q] = torch.where(valid, precision_sum / counts.clamp(min=1), 0.0).cpu()
        self.inp[q] = torch.where(valid, counts / last_rank, 0.0).cpu()
        self.first_rank[q] = torch.where(valid, first_rank, 0).cpu()

    def result(self, max_rank: int = 50) -> RankResult:
        if not bool(self.seen.all()):
            missing = int((~self.seen).sum())
            raise RuntimeError(f"rank accumulator: {missing} query rows were never given distances")
        valid = self.first_rank > 0
        num_valid = int(valid.sum())
        if num_valid == 0:
            raise ValueError(
                f"evaluation: none of the {self.first_rank.numel()} queries has a valid match in the "
                "gallery (same pid in another camera); check the query/gallery split"
            )
        first = self.first_rank[valid]
        cmc = (first[None, :] <= torch.arange(1, max_rank + 1)[:, None]).double().mean(1)
        return RankResult(
            mAP=float(self.ap[valid].mean()),
            mINP=float(self.inp[valid].mean()),
            cmc=cmc,
            num_valid_queries=num_valid,
            num_queries=int(self.first_rank.numel()),
        )


def _check_labels(pids: Tensor, camids: Tensor, split: str) -> None:
    if pids.ndim != 1 or camids.shape != pids.shape:
        raise ValueError(
            f"{split} labels: expected 1-d pids and camids of equal length, got "
            f"{list(pids.shape)} and {list(camids.shape)}"
        )


def evaluate_from_distances(
    distances: Tensor,
    query_pids: Tensor,
    gallery_pids: Tensor,
    query_camids: Tensor,
    gallery_camids: Tensor,
    max_rank: int = 50,
    chunk_size: int = 2048,
) -> RankResult:
    """Metrics from a full ``[num_query, num_gallery]`` distance matrix (smaller = more similar)."""
    if distances.ndim != 2 or distances.shape != (query_pids.numel(), gallery_pids.numel()):
        raise ValueError(
            f"distances: expected shape [{query_pids.numel()}, {gallery_pids.numel()}], "
            f"got {list(distances.shape)}"
        )
    acc = RankAccumulator(query_pids, gallery_pids, query_camids, gallery_camids)
    for start in range(0, distances.shape[0], chunk_size):
        acc.add(start, distances[start : start + chunk_size])
    return acc.result(max_rank)
