import pytest
import torch

from reid.losses import IDLoss, ReIDObjective, TripletLoss


def _branches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = tuple(torch.randn(8, 6, generator=g) for _ in range(n))
    logits = tuple(torch.randn(8, 4, generator=g) for _ in range(n))
    return feats, logits, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def test_single_branch_is_plain_sum():
    feats, logits, labels = _branches(1)
    out = ReIDObjective()(feats, logits, labels, (1.0,))
    id_ref = IDLoss()(logits[0], labels)
    tri_ref = TripletLoss()(feats[0], labels)
    torch.testing.assert_close(out.id, id_ref)
    torch.testing.assert_close(out.triplet, tri_ref)
    torch.testing.assert_close(out.total, id_ref + tri_ref)


def test_jpm_weighting_matches_official_formula():
    feats, logits, labels = _branches(5)  # global + 4 local branches
    objective = ReIDObjective(IDLoss(), TripletLoss(margin=0.3), id_weight=1.0, triplet_weight=2.0)
    out = objective(feats, logits, labels, (0.5, 0.125, 0.125, 0.125, 0.125))
    ce, tri = IDLoss(), TripletLoss(margin=0.3)
    id_ref = 0.5 * ce(logits[0], labels) + 0.5 * sum(ce(z, labels) for z in logits[1:]) / 4
    tri_ref = 0.5 * tri(feats[0], labels) + 0.5 * sum(tri(f, labels) for f in feats[1:]) / 4
    torch.testing.assert_close(out.id, id_ref)
    torch.testing.assert_close(out.triplet, tri_ref)
    torch.testing.assert_close(out.total, id_ref + 2.0 * tri_ref)


def test_branch_count_mismatch_is_rejected():
    feats, logits, labels = _branches(2)
    with pytest.raises(ValueError, match="per branch"):
        ReIDObjective()(feats, logits, labels, (1.0,))
