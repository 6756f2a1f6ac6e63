import math

import pytest
import torch

from reid.losses import IDLoss


def test_plain_cross_entropy_value():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    lse0 = math.log(math.exp(2) + 2)
    lse1 = math.log(math.exp(1) + 2)
    expected = ((lse0 - 2.0) + (lse1 - 0.0)) / 2
    assert IDLoss()(logits, labels).item() == pytest.approx(expected, abs=1e-6)


def test_label_smoothing_value():
    eps, k = 0.1, 3
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    lse = math.log(math.exp(2) + 2)
    logp = [2.0 - lse, -lse, -lse]
    q = [(1 - eps) + eps / k, eps / k, eps / k]  # (1 - eps) * onehot + eps / K
    expected = -sum(qi * li for qi, li in zip(q, logp))
    assert IDLoss(label_smoothing=eps)(logits, torch.tensor([0])).item() == pytest.approx(expected, abs=1e-6)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="label_smoothing"):
        IDLoss(label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"\[N,K\]"):
        IDLoss()(torch.zeros(3), torch.zeros(3, dtype=torch.long))
