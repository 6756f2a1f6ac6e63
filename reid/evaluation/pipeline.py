"""Features in, metrics out: normalisation -> AQE -> distances or re-ranking -> CMC/mAP/mINP."""

from __future__ import annotations

from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor

from reid.evaluation.config import EvalConfig
from reid.evaluation.distances import distance_chunks
from reid.evaluation.query_expansion import ExpandedFeatures, average_query_expansion
from reid.evaluation.rank import RankAccumulator, RankResult
from reid.evaluation.rerank import rerank_distance_chunks


def prepare_features(query: Tensor, gallery: Tensor, config: EvalConfig) -> ExpandedFeatures:
    """Optional L2 normalisation, then optional AQE (re-normalised afterwards when ``normalize``)."""
    if config.normalize:
        query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
    if config.aqe is not None:
        query, gallery = average_query_expansion(query, gallery, config.aqe, config.chunk_size)
        if config.normalize:
            query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
    return ExpandedFeatures(query, gallery)


def evaluation_distance_chunks(
    query_features: Tensor, gallery_features: Tensor, config: EvalConfig
) -> Iterator[tuple[int, Tensor]]:
    """``(first query row, distance rows)`` chunks of ``config.chunk_size`` query rows after
    :func:`prepare_features`: re-ranked distances when ``config.rerank``, else plain ``config.metric``."""
    query, gallery = prepare_features(query_features, gallery_features, config)
    if config.rerank is not None:
        return rerank_distance_chunks(query, gallery, config.rerank, config.metric, config.chunk_size)
    return distance_chunks(query, gallery, config.metric, config.chunk_size)


def evaluate(
    query_features: Tensor,
    gallery_features: Tensor,
    query_pids: Tensor,
    gallery_pids: Tensor,
    query_camids: Tensor,
    gallery_camids: Tensor,
    config: EvalConfig,
) -> RankResult:
    """Metrics of query vs gallery features under ``config``; the q x g distance matrix is only ever
    materialised ``config.chunk_size`` query rows at a time, on the features' device."""
    if query_features.shape[0] != query_pids.numel() or gallery_features.shape[0] != gallery_pids.numel():
        raise ValueError(
            f"evaluate: {query_features.shape[0]} query / {gallery_features.shape[0]} gallery features "
            f"but {query_pids.numel()} / {gallery_pids.numel()} labels"
        )
    chunks = evaluation_distance_chunks(query_features, gallery_features, config)
    device = query_features.device
    acc = RankAccumulator(
        query_pids.to(device), gallery_pids.to(device), query_camids.to(device), gallery_camids.to(device)
    )
    for start, dist in chunks:
        acc.add(start, dist)
    return acc.result(config.max_rank)
