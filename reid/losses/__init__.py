"""Losses: tensors in, scalar out; each module's docstring gives the equation and the paper.

The supervised objective (:class:`Objective`) is a set of named, weighted :class:`LossTerm` s.
"""

from reid.losses.id_loss import IDLoss
from reid.losses.objective import IDTerm, LossTerm, Objective, ObjectiveInput, ObjectiveOutput, TripletTerm
from reid.losses.rpe_triplet import RPETripletTerm
from reid.losses.triplet import HardPairs, TripletLoss, hard_example_mining, pairwise_euclidean

__all__ = [
    "HardPairs",
    "IDLoss",
    "IDTerm",
    "LossTerm",
    "Objective",
    "ObjectiveInput",
    "ObjectiveOutput",
    "RPETripletTerm",
    "TripletLoss",
    "TripletTerm",
    "hard_example_mining",
    "pairwise_euclidean",
]
