"""VehicleID protocol: metrics averaged over seeded query/gallery re-splits (trials).

Each :class:`~reid.data.records.Trial` picks a gallery (one image per vehicle) and a query set out of
the same test images. VehicleID has no cameras and query and gallery are disjoint, so no gallery
item is removed: every same-id gallery image is a true match. R1, R5 and mAP (and the rest of the
:class:`RankResult`) are the means over trials; the query counts are summed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from reid.data.records import Trial
from reid.evaluation.config import EvalConfig
from reid.evaluation.pipeline import evaluate
from reid.evaluation.rank import RankResult


def _as_index(values: np.ndarray | Tensor, size: int, what: str) -> Tensor:
    index = torch.as_tensor(np.asarray(values), dtype=torch.long)
    if index.ndim != 1 or index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= size:
        raise ValueError(f"{what}: expected a non-empty 1-d index into {size} test images")
    return index


def evaluate_trials(
    features: Tensor, pids: Tensor, trials: Sequence[Trial], config: EvalConfig
) -> RankResult:
    """Average of :func:`evaluate` over ``trials`` (indices into ``features``)."""
    if len(trials) == 0:
        raise ValueError("evaluate_trials: expected at least one trial")
    results = []
    for number, trial in enumerate(trials):
        q = _as_index(trial.query_index, features.shape[0], f"trial {number} query_index").to(features.device)
        g = _as_index(trial.gallery_index, features.shape[0], f"trial {number} gallery_index").to(
            features.device
        )
        q_cam = torch.zeros(q.numel(), dtype=torch.long, device=features.device)
        g_cam = torch.ones(g.numel(), dtype=torch.long, device=features.device)
        results.append(evaluate(features[q], features[g], pids[q], pids[g], q_cam, g_cam, config))
    return RankResult(
        mAP=float(np.mean([r.mAP for r in results])),
        mINP=float(np.mean([r.mINP for r in results])),
        cmc=torch.stack([r.cmc for r in results]).mean(0),
        num_valid_queries=sum(r.num_valid_queries for r in results),
        num_queries=sum(r.num_queries for r in results),
    )
