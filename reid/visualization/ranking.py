"""Which queries a ranked-list picture shows, and their top-k, from the features of one evaluation.

Each query's AP comes from the evaluation's own accumulator (:class:`reid.evaluation.rank.RankAccumulator`)
over the same distance rows the evaluation ranks (``EvalConfig``: L2 normalisation, AQE, re-ranking, metric),
one chunk of ``eval.chunk_size`` query rows at a time. Beside it each query's top-k gallery positions are
kept (``[Q, k]``), so the query x gallery matrix is never held, even for MSMT17's 11,659 x 82,161.

The top-k is the plain gallery order by (distance, gallery position), the ranked list's order
(``reid.evaluation.rank``); it keeps the same-camera items of the query's identity and the pid < 0 items,
which scoring removes: the picture shows them, greyed (status ``"junk"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from reid.data.records import Record
from reid.evaluation.config import EvalConfig
from reid.evaluation.distances import top_k_stable
from reid.evaluation.pipeline import evaluation_distance_chunks
from reid.evaluation.rank import RankAccumulator, RankResult
from reid.visualization.ranked_list import RankedRow


@dataclass(frozen=True)
class QueryRanking:
    """Per query: ``ap`` (float64, 0 without a true match), ``first_rank`` (1-based rank of the first true
    match in the scored list, 0 = none), ``top_index`` / ``top_distance`` ``[Q, k]`` (gallery positions,
    nearest first); and ``result``, the evaluation's metrics from the same accumulator."""

    ap: Tensor
    first_rank: Tensor
    top_index: Tensor
    top_distance: Tensor
    result: RankResult

    @property
    def valid(self) -> Tensor:
        """Queries with a true match in another camera: the ones the metrics average over."""
        return self.first_rank > 0


def rank_queries(
    query_features: Tensor,
    gallery_features: Tensor,
    query_pids: Tensor,
    gallery_pids: Tensor,
    query_camids: Tensor,
    gallery_camids: Tensor,
    config: EvalConfig,
    top_k: int,
) -> QueryRanking:
    """Per-query AP and top-``top_k`` under ``config``, chunk by chunk (module docstring); ``result`` is
    what ``reid.evaluation.evaluate`` returns for the same inputs (its mAP the mean ``ap`` of the valid
    queries). Raises as the evaluation does when no query has a true match."""
    if top_k < 1:
        raise ValueError(f"rank_queries: top_k must be >= 1, got {top_k}")
    chunks = evaluation_distance_chunks(query_features, gallery_features, config)
    device = query_features.device
    accumulator = RankAccumulator(
        query_pids.to(device), gallery_pids.to(device), query_camids.to(device), gallery_camids.to(device)
    )
    indices, distances = [], []
    for start, dist in chunks:
        accumulator.add(start, dist)
        top = top_k_stable(dist, top_k)
        indices.append(top[0].cpu())
        distances.append(top[1].float().cpu())
    result = accumulator.result(config.max_rank)
    return QueryRanking(
        accumulator.ap, accumulator.first_rank, torch.cat(indices), torch.cat(distances), result
    )


def select_queries(ranking: QueryRanking, worst: int, best: int) -> list[tuple[int, str]]:
    """``(query position, "worst" | "best")``: the ``worst`` valid queries of lowest AP (lowest first), then
    the ``best`` of highest AP (highest first) not already chosen; equal APs in query order."""
    valid = torch.nonzero(ranking.valid).squeeze(1)
    ap = ranking.ap[valid]
    ascending = valid[torch.argsort(ap, stable=True)].tolist()
    descending = valid[torch.argsort(-ap, stable=True)].tolist()
    chosen = [(q, "worst") for q in ascending[: max(0, worst)]]
    taken = {q for q, _ in chosen}
    chosen += [(q, "best") for q in [q for q in descending if q not in taken][: max(0, best)]]
    return chosen


def gallery_status(query_pid: int, query_camid: int, gallery_pid: int, gallery_camid: int) -> str:
    """What a gallery item is for a query under the scoring protocol (``reid.evaluation.rank``)."""
    if gallery_pid < 0 or (gallery_pid == query_pid and gallery_camid == query_camid):
        return "junk"
    return "match" if gallery_pid == query_pid else "wrong"


def ranked_rows(
    ranking: QueryRanking,
    selection: Sequence[tuple[int, str]],
    query_records: Sequence[Record],
    gallery_records: Sequence[Record],
) -> list[RankedRow]:
    """The picture rows of the ``selection`` (:func:`select_queries`); statuses from the records' labels."""
    if ranking.ap.numel() != len(query_records):
        raise ValueError(
            f"ranked_rows: {ranking.ap.numel()} ranked queries but {len(query_records)} query records"
        )
    rows = []
    for query, label in selection:
        record = query_records[query]
        shown = [gallery_records[j] for j in ranking.top_index[query].tolist()]
        status = [gallery_status(record.pid, record.camid, g.pid, g.camid) for g in shown]
        title = (
            f"{label}: query {query} (id {record.pid}, cam {record.camid + 1})  "
            f"AP {100 * float(ranking.ap[query]):.1f}%  first match at rank {int(ranking.first_rank[query])}"
        )
        distances = ranking.top_distance[query].tolist()
        rows.append(RankedRow(Path(record.path), [Path(g.path) for g in shown], distances, status, title))
    return rows
