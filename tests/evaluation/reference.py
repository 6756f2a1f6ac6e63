"""Plain per-query reference implementations the fast code is checked against (numpy, float64)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ReferenceMetrics(NamedTuple):
    mAP: float  # noqa: N815 (contract name)
    mINP: float  # noqa: N815 (contract name)
    cmc: np.ndarray
    num_valid: int


def reference_metrics(dist, q_pids, g_pids, q_cams, g_cams, max_rank: int = 50) -> ReferenceMetrics:
    """Standard protocol, one query at a time, ranked list = stable argsort of the valid gallery."""
    dist, q_pids, g_pids, q_cams, g_cams = (np.asarray(a) for a in (dist, q_pids, g_pids, q_cams, g_cams))
    aps, inps, cmcs = [], [], []
    for i in range(len(q_pids)):
        valid = (g_pids >= 0) & ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        order = np.argsort(dist[i][valid], kind="stable")
        hits = (g_pids[valid][order] == q_pids[i]).astype(np.float64)
        if hits.sum() == 0:
            continue
        ranks = np.flatnonzero(hits) + 1.0
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
        cmcs.append((np.arange(1, max_rank + 1) >= ranks[0]).astype(np.float64))
    return ReferenceMetrics(float(np.mean(aps)), float(np.mean(inps)), np.mean(cmcs, 0), len(aps))


def reference_aqe(query, gallery, alpha: float, k: int):
    """fast-reid style alpha-QE, one row at a time (full sort of each row of cosine similarities)."""
    feats = np.concatenate([query, gallery]).astype(np.float64)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    out = np.empty_like(feats)
    for i in range(len(feats)):
        sims = unit @ unit[i]
        top = np.argsort(-sims, kind="stable")[:k]
        out[i] = np.mean(feats[top] * (sims[top] ** alpha)[:, None], axis=0)
    return out[: len(query)], out[len(query) :]


def reference_rerank(query, gallery, k1: int, k2: int, lambda_value: float):
    """Dense k-reciprocal re-ranking, a direct transcription of Zhong et al. (CVPR 2017), float64."""
    feats = np.concatenate([query, gallery]).astype(np.float64)
    n, nq = len(feats), len(query)
    sq = (feats**2).sum(1)
    original = np.maximum(sq[:, None] + sq[None, :] - 2 * feats @ feats.T, 0)
    original = original / original.max(axis=1, keepdims=True)
    initial_rank = np.argsort(original, axis=1, kind="stable")
    V = np.zeros((n, n))
    half = int(np.around(k1 / 2)) + 1

    def k_reciprocal(i, k):
        forward = initial_rank[i, : k + 1]
        backward = initial_rank[forward, : k + 1]
        return forward[np.where(backward == i)[0]]

    for i in range(n):
        kr = k_reciprocal(i, k1)
        expansion = kr
        for candidate in kr:
            cand_kr = k_reciprocal(candidate, half - 1)
            if len(np.intersect1d(cand_kr, kr)) > 2.0 / 3 * len(cand_kr):
                expansion = np.append(expansion, cand_kr)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        V[i, expansion] = weight / weight.sum()
    if k2 != 1:
        V = np.stack([V[initial_rank[i, :k2]].mean(0) for i in range(n)])
    jaccard = np.zeros((nq, n))
    for i in range(nq):
        overlap = np.minimum(V[i][None, :], V).sum(1)
        jaccard[i] = 1 - overlap / (2 - overlap)
    final = jaccard * (1 - lambda_value) + original[:nq] * lambda_value
    return final[:, nq:]
