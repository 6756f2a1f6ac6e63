"""Batch-hard triplet loss (Hermans et al., "In Defense of the Triplet Loss", 2017).

Used by TransReID (Sec. 3.1, ``loss/triplet_loss.py`` in the official code) on the features
*before* the BNNeck. For every anchor ``a`` in a P x K batch the hardest positive (largest
distance, same identity) and hardest negative (smallest distance, other identity) are mined::

    d_ap = max_{p: y_p = y_a} ||f_a - f_p||,   d_an = min_{n: y_n != y_a} ||f_a - f_n||
    hard margin m:  L = mean_a max(0, d_ap - d_an + m)
    soft margin:    L = mean_a log(1 + exp(d_ap - d_an))

The anchor itself counts as a positive (distance ~0), exactly as in the official mining, so an
identity with a single image in the batch contributes ``d_ap ~ 0``.

Under DDP the mining runs over the global batch: :func:`global_batch` gathers every rank's features
(with gradient) and labels first (``reid.distributed``), so N processes compute the one-process loss and
gradient. (The official TransReID DDP code mines within each process's share; fast-reid gathers too.)
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from reid.distributed import gather, gather_with_grad


def global_batch(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's ``features`` (differentiable) and ``labels``, in rank order; the inputs themselves
    with one process."""
    return gather_with_grad(features), gather(labels)


class HardPairs(NamedTuple):
    """Per-anchor distances to the hardest positive and hardest negative, shape [N] each."""

    dist_ap: Tensor
    dist_an: Tensor


def pairwise_euclidean(x: Tensor, y: Tensor) -> Tensor:
    """||x_i - y_j||_2 for x [M,D], y [N,D] -> [M,N]; squared distance clamped at 1e-12 before sqrt."""
    squared = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * x @ y.t()
    return squared.clamp(min=1e-12).sqrt()


class HardIndices(NamedTuple):
    """Per-anchor batch index of the hardest positive and of the hardest negative, shape [N] each."""

    positive: Tensor
    negative: Tensor


def _same_identity(dist: Tensor, labels: Tensor) -> Tensor:
    """The [N,N] same-identity mask, after checking ``dist`` and ``labels`` (:func:`hard_example_mining`)."""
    if dist.dim() != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(
            f"hard_example_mining: expected a square [N,N] distance matrix, got {tuple(dist.shape)}"
        )
    if labels.shape != (dist.shape[0],):
        raise ValueError(f"hard_example_mining: labels shape {tuple(labels.shape)} != ({dist.shape[0]},)")
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    if bool(same.all()):
        raise ValueError(
            "hard_example_mining: the batch holds a single identity, so no anchor has a negative; "
            "use a P x K sampler with P >= 2"
        )
    return same


def hard_example_mining(dist: Tensor, labels: Tensor) -> HardPairs:
    """Hardest positive and negative of every anchor from a square distance matrix [N,N].

    Unlike the official implementation this does not need the same number of images per
    identity: positives and negatives are selected with masks. Every anchor must have at least
    one negative, i.e. the batch must hold two or more identities.
    """
    same = _same_identity(dist, labels)
    dist_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    dist_an = dist.masked_fill(same, float("inf")).amin(dim=1)
    return HardPairs(dist_ap, dist_an)


def hard_example_indices(dist: Tensor, labels: Tensor) -> HardIndices:
    """The same mining as :func:`hard_example_mining`, as batch indices (for losses that compare other
    features of the mined triplets, e.g. ``reid.losses.causality``); ties go to the lowest index."""
    same = _same_identity(dist, labels)
    positive = dist.masked_fill(~same, float("-inf")).argmax(dim=1)
    negative = dist.masked_fill(same, float("inf")).argmin(dim=1)
    return HardIndices(positive, negative)


class TripletLoss(nn.Module):
    """Batch-hard triplet loss; ``margin=None`` selects the soft margin (TransReID's default).

    Args:
        margin: hard margin m (0.3 in TransReID when ``NO_MARGIN`` is off) or ``None`` for soft.
        normalize_feature: L2-normalise the features before computing distances.

    Shapes: ``features`` [N,D], ``labels`` [N] -> scalar (over the global batch under DDP).
    """

    def __init__(self, margin: float | None = None, normalize_feature: bool = False) -> None:
        super().__init__()
        if margin is not None and margin < 0:
            raise ValueError(f"TripletLoss: margin must be >= 0 or None (soft margin), got {margin}")
        self.margin = margin
        self.normalize_feature = normalize_feature

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        if features.dim() != 2:
            raise ValueError(f"TripletLoss: expected features [N,D], got shape {tuple(features.shape)}")
        if self.normalize_feature:
            features = F.normalize(features, dim=1, eps=1e-12)
        features, labels = global_batch(features, labels)
        pairs = hard_example_mining(pairwise_euclidean(features, features), labels)
        gap = pairs.dist_ap - pairs.dist_an
        if self.margin is None:
            return F.softplus(gap).mean()
        return F.relu(gap + self.margin).mean()

    def extra_repr(self) -> str:
        margin = "soft" if self.margin is None else self.margin
        return f"margin={margin}, normalize_feature={self.normalize_feature}"
