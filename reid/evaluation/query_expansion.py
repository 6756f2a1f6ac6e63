"""Average query expansion with similarity weights (alpha-QE), as in fast-reid's ``aqe``.

For every feature ``f_i`` of the joint set (queries then gallery), with ``N_k(i)`` its ``k`` most
cosine-similar features (itself included) and ``s_ij`` the cosine similarity:

    f_i' = (1/k) * sum_{j in N_k(i)} s_ij^alpha * f_j        (Radenovic et al., TPAMI 2018)

One expansion round. Neighbours come from a chunked top-k, so no N x N matrix is held. Ties at the
k-th neighbour are broken by ``torch.topk`` (arbitrary but deterministic).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from reid.evaluation.config import AQEConfig


class ExpandedFeatures(NamedTuple):
    query: Tensor
    gallery: Tensor


def average_query_expansion(
    query: Tensor, gallery: Tensor, config: AQEConfig, chunk_size: int = 2048
) -> ExpandedFeatures:
    """Apply one round of alpha-weighted AQE to queries and gallery together."""
    features = torch.cat([query, gallery], 0)
    if config.k > features.shape[0]:
        raise ValueError(f"eval.aqe.k={config.k} exceeds the number of features {features.shape[0]}")
    unit = F.normalize(features, dim=1)
    expanded = torch.empty_like(features)
    for start in range(0, features.shape[0], chunk_size):
        sims = torch.mm(unit[start : start + chunk_size], unit.t())
        top_sim, top_idx = torch.topk(sims, config.k, dim=1)
        del sims
        weights = top_sim.pow(config.alpha)
        expanded[start : start + chunk_size] = (features[top_idx] * weights[..., None]).mean(1)
    return ExpandedFeatures(expanded[: query.shape[0]], expanded[query.shape[0] :])
