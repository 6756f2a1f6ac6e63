"""DINO's loss, centre, head and EMA teacher together: sharp clusters when views agree, uniform
collapse when they do not.

Eight "images" are fixed random vectors; a view is the vector plus Gaussian noise, and the
"backbone" is one linear layer. With weak noise the views of an image agree and the teacher's
entropy falls far below ln K (every image gets its own prototype); with noise that swamps the
image, sharpening cannot beat centring and the teacher goes uniform (entropy ln K, KL 0). The
logged ``train/teacher_entropy`` and ``train/kl`` tell these two regimes apart in a real run.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from reid.losses.dino import DINOLoss, mean_entropy
from reid.models.ema import ema_update_
from reid.models.projection_head import DINOHead

K = 64


@pytest.fixture(autouse=True)
def _one_thread():
    """300 steps of 16-d layers: one thread, or OpenMP's synchronisation costs more than the maths
    (190 ms a step with 2 threads on a busy 2-core machine, 10-25 ms with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(noise: float, steps: int = 300) -> tuple[float, float]:
    """(teacher entropy, loss - entropy) averaged over the last 20 steps."""
    torch.manual_seed(0)
    images = torch.randn(8, 16)
    student = nn.Sequential(nn.Linear(16, 32), DINOHead(32, K, hidden_dim=64, bottleneck_dim=16))
    teacher = copy.deepcopy(student).requires_grad_(False)
    loss_fn = DINOLoss(K)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.04)
    tail: list[tuple[float, float]] = []
    for step in range(steps):
        batch = images[torch.randint(0, 8, (16,))]
        views = [batch + noise * torch.randn_like(batch) for _ in range(4)]
        with torch.no_grad():
            teacher_out = [teacher(v) for v in views[:2]]
            entropy = mean_entropy(loss_fn.centre.probabilities(torch.stack(teacher_out), 0.04))
        loss = loss_fn([student(v) for v in views], teacher_out, 0.04)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema_update_(teacher, student, 0.99)
        if step >= steps - 20:
            tail.append((float(entropy), float(loss.detach()) - float(entropy)))
    return sum(e for e, _ in tail) / len(tail), sum(k for _, k in tail) / len(tail)


def test_consistent_views_give_a_sharp_teacher() -> None:
    entropy, kl = _train(noise=0.5)
    assert entropy < 0.5, f"teacher entropy {entropy:.3f} should fall far below ln K = {math.log(K):.3f}"
    assert kl >= 0.0


def test_views_that_swamp_the_image_collapse_to_uniform() -> None:
    entropy, kl = _train(noise=6.0)
    assert entropy == pytest.approx(math.log(K), abs=0.05)
    assert kl == pytest.approx(0.0, abs=0.05)
