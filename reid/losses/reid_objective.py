"""The supervised re-ID objective: ID loss + triplet loss summed over the network's branches.

TransReID Sec. 3.3 (``loss/make_loss.py``): with a global branch g and k JPM local branches l_j::

    L_ID  = 0.5 * CE(z_g) + 0.5 * (1/k) sum_j CE(z_lj)
    L_Tri = 0.5 * Tri(f_g) + 0.5 * (1/k) sum_j Tri(f_lj)
    L     = w_id * L_ID + w_tri * L_Tri

The branch weights (0.5, 0.5/k, ..., 0.5/k), or (1.0,) without JPM, come from the network
(``ReIDNet.branch_weights``), so this module knows nothing of models. The triplet loss takes the
features before the BNNeck, the ID loss the logits after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from reid.losses.id_loss import IDLoss
from reid.losses.triplet import TripletLoss


class ObjectiveOutput(NamedTuple):
    """``total = id_weight * id + triplet_weight * triplet``; ``id``/``triplet`` are branch-weighted."""

    total: Tensor
    id: Tensor
    triplet: Tensor


class ReIDObjective(nn.Module):
    """Weighted sum of ID and triplet losses over branches.

    Args:
        id_loss: classification loss on each branch's logits.
        triplet_loss: metric loss on each branch's features.
        id_weight, triplet_weight: ``ID_LOSS_WEIGHT`` / ``TRIPLET_LOSS_WEIGHT`` (1.0 each in TransReID).
    """

    def __init__(
        self,
        id_loss: IDLoss | None = None,
        triplet_loss: TripletLoss | None = None,
        id_weight: float = 1.0,
        triplet_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.id_loss = id_loss if id_loss is not None else IDLoss()
        self.triplet_loss = triplet_loss if triplet_loss is not None else TripletLoss()
        self.id_weight = id_weight
        self.triplet_weight = triplet_weight

    def forward(
        self,
        feats: Sequence[Tensor],
        logits: Sequence[Tensor],
        labels: Tensor,
        branch_weights: Sequence[float],
    ) -> ObjectiveOutput:
        """``feats``/``logits``: one [N,D]/[N,K] tensor per branch; ``branch_weights`` one float each."""
        if not (len(feats) == len(logits) == len(branch_weights)) or len(feats) == 0:
            raise ValueError(
                "ReIDObjective: need one feature, one logits tensor and one weight per branch, got "
                f"{len(feats)} feats, {len(logits)} logits, {len(branch_weights)} branch_weights"
            )
        id_term = sum(w * self.id_loss(z, labels) for w, z in zip(branch_weights, logits))
        tri_term = sum(w * self.triplet_loss(f, labels) for w, f in zip(branch_weights, feats))
        total = self.id_weight * id_term + self.triplet_weight * tri_term
        return ObjectiveOutput(total, id_term, tri_term)
