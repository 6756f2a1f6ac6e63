"""Losses: tensors in, scalar out; each module's docstring gives the equation and the paper."""

from reid.losses.id_loss import IDLoss
from reid.losses.reid_objective import ObjectiveOutput, ReIDObjective
from reid.losses.triplet import HardPairs, TripletLoss, hard_example_mining, pairwise_euclidean

__all__ = [
    "HardPairs",
    "IDLoss",
    "ObjectiveOutput",
    "ReIDObjective",
    "TripletLoss",
    "hard_example_mining",
    "pairwise_euclidean",
]
