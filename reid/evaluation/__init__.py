"""ReID evaluation: exact CMC / mAP / mINP, AQE and k-reciprocal re-ranking, memory-bounded, DDP-aware.

Pure functions of tensors (``evaluate``, ``evaluate_from_distances``, ``evaluate_trials``) plus the
stateful :class:`ReIDEvaluator` used by the Lightning tasks.
"""

from reid.evaluation.config import AQEConfig, EvalConfig, RerankConfig
from reid.evaluation.distances import distance_chunks, pairwise_distance
from reid.evaluation.evaluator import ReIDEvaluator
from reid.evaluation.pipeline import evaluate
from reid.evaluation.query_expansion import average_query_expansion
from reid.evaluation.rank import RankResult, evaluate_from_distances
from reid.evaluation.rerank import rerank_distance_chunks
from reid.evaluation.vehicleid import evaluate_trials

__all__ = [
    "AQEConfig",
    "EvalConfig",
    "RankResult",
    "ReIDEvaluator",
    "RerankConfig",
    "average_query_expansion",
    "distance_chunks",
    "evaluate",
    "evaluate_from_distances",
    "evaluate_trials",
    "pairwise_distance",
    "rerank_distance_chunks",
]
