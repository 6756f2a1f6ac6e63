"""DINO and PASS losses against explicit reference loops; centre updates by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reid.losses.dino import DINOLoss, mean_entropy, teacher_temperature_schedule
from reid.losses.pass_loss import PASSLoss


def cross_entropy(teacher_logits, centre, t_temp, student_logits, s_temp) -> float:
    """mean_b -sum_k softmax((t - c)/tau_t)_k log softmax(s/tau_s)_k, written with explicit exp/log."""
    total = 0.0
    for t_row, s_row in zip(teacher_logits.tolist(), student_logits.tolist()):
        t = [math.exp((x - c) / t_temp) for x, c in zip(t_row, centre)]
        s = [math.exp(x / s_temp) for x in s_row]
        total += -sum((a / sum(t)) * math.log(b / sum(s)) for a, b in zip(t, s))
    return total / len(teacher_logits)


def test_dino_loss_matches_reference_loop_and_updates_centre() -> None:
    torch.manual_seed(0)
    student = [torch.randn(3, 5, dtype=torch.float64) for _ in range(4)]  # 2 globals + 2 locals
    teacher = [torch.randn(3, 5, dtype=torch.float64) for _ in range(2)]
    loss_fn = DINOLoss(5).double()
    loss_fn.centre.center.fill_(0.25)
    loss = loss_fn(student, teacher, teacher_temp=0.07)
    pairs = [(i, v) for i in range(2) for v in range(4) if v != i]
    expected = sum(cross_entropy(teacher[i], [0.25] * 5, 0.07, student[v], 0.1) for i, v in pairs) / len(
        pairs
    )
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    mean = torch.cat(teacher).mean(0, keepdim=True)
    torch.testing.assert_close(loss_fn.centre.center, 0.9 * 0.25 + 0.1 * mean)


def test_dino_loss_gradient_reaches_only_the_student() -> None:
    student = [torch.randn(2, 4, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(2, 4, requires_grad=True) for _ in range(2)]
    DINOLoss(4)(student, teacher, 0.04).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)


def test_pass_loss_matches_reference_loop() -> None:
    torch.manual_seed(1)
    G, n, L, B, K = 2, 4, 2, 3, 6
    s_cls, t_cls = torch.randn(G + n, B, K).double(), torch.randn(G, B, K).double()
    s_pg, t_p = torch.randn(G, L, B, K).double(), torch.randn(G, L, B, K).double()
    s_pl = torch.randn(n, B, K).double()
    regions = torch.tensor([0, 0, 1, 1])
    loss_fn = PASSLoss(K, L).double()
    out = loss_fn(s_cls, s_pg, s_pl, t_cls, t_p, regions, teacher_temp=0.05)

    zero = [0.0] * K
    cls_terms = [
        cross_entropy(t_cls[i], zero, 0.05, s_cls[v], 0.1) for i in range(G) for v in range(G + n) if v != i
    ]
    part_terms = []
    for r in range(L):
        views = [s_pg[g, r] for g in range(G)] + [s_pl[j] for j in range(n) if regions[j] == r]
        part_terms += [
            cross_entropy(t_p[i, r], zero, 0.05, views[v], 0.1)
            for i in range(G)
            for v in range(len(views))
            if v != i
        ]
    assert len(cls_terms) == G * (G + n) - G and len(part_terms) == L * (G * (G + 2) - G)
    assert out.loss_cls.item() == pytest.approx(np.mean(cls_terms), rel=1e-10)
    assert out.loss_part.item() == pytest.approx(np.mean(part_terms), rel=1e-10)
    assert out.loss.item() == pytest.approx(np.mean(cls_terms + part_terms), rel=1e-10)
    # one centre per part, each following its own part's teacher outputs
    for r in range(L):
        torch.testing.assert_close(
            loss_fn.centre_parts[r].center, 0.1 * t_p[:, r].reshape(-1, K).mean(0, keepdim=True)
        )


def test_pass_loss_rejects_regions_outside_the_parts() -> None:
    loss_fn = PASSLoss(4, 2)
    with pytest.raises(ValueError, match="regions must lie"):
        loss_fn(
            torch.randn(3, 1, 4), torch.randn(2, 2, 1, 4), torch.randn(1, 1, 4), torch.randn(2, 1, 4),
            torch.randn(2, 2, 1, 4), torch.tensor([2]), 0.04,
        )  # fmt: skip


def test_teacher_temperature_schedule_warms_up_per_epoch_then_stays() -> None:
    """DINO's teacher_temp_schedule is indexed by the epoch: linspace over the warm-up epochs."""
    values = teacher_temperature_schedule(0.04, 0.07, warmup_epochs=3, epochs=5, steps_per_epoch=2)
    assert len(values) == 10
    np.testing.assert_allclose(values, [0.04, 0.04, 0.055, 0.055, 0.07, 0.07, 0.07, 0.07, 0.07, 0.07])


def test_mean_entropy_spans_zero_to_log_k() -> None:
    """ln K for uniform rows (uniform collapse), 0 for one-hot rows (one-prototype collapse)."""
    uniform = torch.full((3, 8), 1 / 8)
    one_hot = torch.eye(8)[:3]
    mixed = torch.stack([uniform[0], one_hot[0]])
    torch.testing.assert_close(mean_entropy(uniform), torch.tensor(math.log(8)))
    torch.testing.assert_close(mean_entropy(one_hot), torch.tensor(0.0))
    torch.testing.assert_close(mean_entropy(mixed), torch.tensor(math.log(8) / 2))
