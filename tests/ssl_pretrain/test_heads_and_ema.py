"""DINO projection head, EMA update."""

from __future__ import annotations

import torch

from reid.models.ema import ema_update_
from reid.models.projection_head import DINOHead


def test_head_outputs_cosines_with_frozen_unit_gains() -> None:
    torch.manual_seed(0)
    head = DINOHead(12, out_dim=50, hidden_dim=16, bottleneck_dim=8)
    x = torch.randn(5, 12)
    out = head(x)
    assert out.shape == (5, 50)
    # unit-norm bottleneck times unit-norm prototypes: every output is a cosine
    assert out.abs().max() <= 1 + 1e-6
    bottleneck = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    prototypes = torch.nn.functional.normalize(head.last_layer.weight_v, dim=1)
    torch.testing.assert_close(out, bottleneck @ prototypes.T)
    assert not head.last_layer.weight_g.requires_grad
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


def test_head_gains_train_without_norm_last_layer() -> None:
    head = DINOHead(6, out_dim=10, hidden_dim=8, bottleneck_dim=4, norm_last_layer=False)
    head(torch.randn(3, 6)).pow(2).sum().backward()
    assert head.last_layer.weight_g.requires_grad and head.last_layer.weight_g.grad.abs().sum() > 0


def test_ema_update_is_the_convex_combination() -> None:
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update_(teacher, student, momentum=0.75)
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, 0.75 * before[name] + 0.25 * student.state_dict()[name])
    ema_update_(teacher, student, momentum=0.0)
    torch.testing.assert_close(teacher.weight, student.weight)
