import math

import pytest
import torch

from reid.losses import TripletLoss, hard_example_mining, pairwise_euclidean


def _line_batch() -> tuple[torch.Tensor, torch.Tensor]:
    # 1-D points: identity 0 at 0 and 1, identity 1 at 3 and 5.
    feats = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    return feats, labels


def test_hard_mining_on_hand_example():
    feats, labels = _line_batch()
    pairs = hard_example_mining(pairwise_euclidean(feats, feats), labels)
    torch.testing.assert_close(pairs.dist_ap, torch.tensor([1.0, 1.0, 2.0, 2.0]))
    torch.testing.assert_close(pairs.dist_an, torch.tensor([3.0, 2.0, 2.0, 4.0]))


def test_hard_margin_value():
    feats, labels = _line_batch()
    loss = TripletLoss(margin=0.3)(feats, labels)
    # gaps d_ap - d_an = -2, -1, 0, -2 -> relu(gap + 0.3) = 0, 0, 0.3, 0
    assert loss.item() == pytest.approx(0.3 / 4, abs=1e-6)


def test_soft_margin_value():
    feats, labels = _line_batch()
    loss = TripletLoss(margin=None)(feats, labels)
    expected = sum(math.log1p(math.exp(g)) for g in (-2.0, -1.0, 0.0, -2.0)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def _reference_loop(feats: torch.Tensor, labels: torch.Tensor, margin: float | None) -> float:
    total = 0.0
    n = len(labels)
    for a in range(n):
        d = [float(torch.linalg.vector_norm(feats[a] - feats[j])) for j in range(n)]
        ap = max(d[j] for j in range(n) if labels[j] == labels[a])
        an = min(d[j] for j in range(n) if labels[j] != labels[a])
        total += math.log1p(math.exp(ap - an)) if margin is None else max(0.0, ap - an + margin)
    return total / n


@pytest.mark.parametrize("margin", [None, 0.3])
def test_matches_reference_loop_with_uneven_identities(margin):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(11, 5, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4])  # ids 3 and 4 have one image each
    loss = TripletLoss(margin=margin)(feats, labels)
    assert loss.item() == pytest.approx(_reference_loop(feats, labels, margin), abs=1e-5)


def test_normalize_feature_makes_loss_scale_invariant():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(8, 4, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = TripletLoss(margin=0.3, normalize_feature=True)
    assert loss(feats, labels).item() == pytest.approx(loss(7.5 * feats, labels).item(), abs=1e-6)
    assert TripletLoss(margin=0.3)(feats, labels).item() != pytest.approx(
        TripletLoss(margin=0.3)(7.5 * feats, labels).item(), abs=1e-3
    )


def test_gradient_reaches_hard_pairs_only():
    feats, labels = _line_batch()
    feats.requires_grad_(True)
    TripletLoss(margin=0.3)(feats, labels).backward()
    # only anchor x2=3 violates the margin: L = ((x3 - x2) - (x2 - x1) + 0.3) / 4 with x1=1, x3=5
    torch.testing.assert_close(feats.grad.squeeze(1), torch.tensor([0.0, 0.25, -0.5, 0.25]))


def test_single_identity_batch_is_rejected():
    with pytest.raises(ValueError, match="single identity"):
        TripletLoss()(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


def test_negative_margin_is_rejected():
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=-0.1)
