"""DINO self-distillation loss with a centred, sharpened teacher (Caron et al., ICCV 2021, Sec. 3.1).

For teacher outputs t (global views only) and student outputs s (all views), with centre c,
teacher temperature tau_t and student temperature tau_s:

    P_t(x) = softmax((g_t(x) - c) / tau_t)        P_s(x) = softmax(g_s(x) / tau_s)
    L = mean over pairs (i in globals, v in views, v != i) of  mean_batch( -sum_k P_t(x_i)_k log P_s(x_v)_k )

After each step the centre follows the teacher's batch mean (all-reduced over ranks when
``torch.distributed`` is initialised):  c <- m c + (1 - m) mean_b g_t(x_b),  m = 0.9.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def teacher_temperature_schedule(
    warmup_temp: float, temp: float, warmup_epochs: int, epochs: int, steps_per_epoch: int
) -> np.ndarray:
    """Per-step teacher temperature, constant within an epoch: DINO's ``DINOLoss.teacher_temp_schedule``
    (``main_dino.py``; PASS's ``main_pass.py`` the same), indexed by the epoch::

        tau(e) = linspace(warmup_temp, temp, warmup_epochs)[e]    e < warmup_epochs
        tau(e) = temp                                              otherwise

    repeated over the ``steps_per_epoch`` steps of epoch ``e``."""
    if warmup_epochs > epochs:
        raise ValueError(f"teacher temperature warmup_epochs={warmup_epochs} exceeds epochs={epochs}")
    per_epoch = np.concatenate(
        [np.linspace(warmup_temp, temp, warmup_epochs), np.full(epochs - warmup_epochs, temp)]
    )
    return np.repeat(per_epoch, steps_per_epoch)


def cross_view_entropy(
    student_logits: Sequence[Tensor], teacher_probs: Sequence[Tensor], student_temp: float
) -> tuple[Tensor, int]:
    """Sum over pairs (i, v), v != i, of mean_b H(P_t(x_i), softmax(s_v / tau_s)), and the pair count.

    ``teacher_probs[i]`` and ``student_logits[i]`` for i < len(teacher_probs) must be the same view.
    """
    total = student_logits[0].new_zeros(())
    pairs = 0
    log_probs = [F.log_softmax(s / student_temp, dim=-1) for s in student_logits]
    for i, q in enumerate(teacher_probs):
        for v, log_p in enumerate(log_probs):
            if v == i:
                continue
            total = total + torch.sum(-q * log_p, dim=-1).mean()
            pairs += 1
    return total, pairs


def mean_entropy(probs: Tensor) -> Tensor:
    """Mean Shannon entropy (nats) of the distributions in the last dim of ``probs``.

    DINO's collapse check (Caron et al. 2021, Sec. 5.3, Fig. 7): the teacher's entropy tends to
    ln K when centring wins (uniform collapse) and to 0 when sharpening wins (one prototype); in a
    healthy run it falls away from ln K while the teacher-student KL, H(P_t, P_s) - H(P_t), stays > 0.
    """
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1).mean()


class TeacherCentre(nn.Module):
    """The centre c of one output stream: sharpens teacher logits and tracks their mean."""

    center: Tensor  # buffer [1, K]

    def __init__(self, out_dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def probabilities(self, teacher_logits: Tensor, temp: float) -> Tensor:
        """softmax((t - c) / tau_t), detached."""
        return F.softmax((teacher_logits.detach() - self.center) / temp, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: Tensor) -> None:
        """c <- m c + (1 - m) * batch mean of ``teacher_logits`` [N, K] over all ranks."""
        batch_sum = teacher_logits.detach().sum(dim=0, keepdim=True)
        count = teacher_logits.shape[0]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            count *= dist.get_world_size()
        self.center.mul_(self.momentum).add_(batch_sum / count, alpha=1 - self.momentum)


class DINOLoss(nn.Module):
    """DINO loss (module docstring). Shapes: ``student`` is one [B, K] tensor per view (globals
    first), ``teacher`` one [B, K] tensor per global view; returns a scalar and updates the centre.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.centre = TeacherCentre(out_dim, center_momentum)

    @property
    def cls_centre(self) -> TeacherCentre:
        """The centre of the [CLS] stream (the only one in DINO)."""
        return self.centre

    def forward(self, student: Sequence[Tensor], teacher: Sequence[Tensor], teacher_temp: float) -> Tensor:
        if len(teacher) < 1 or len(student) < 2:
            raise ValueError(
                f"DINOLoss needs >= 1 teacher and >= 2 student views, got {len(teacher)} and {len(student)}"
            )
        probs = [self.centre.probabilities(t, teacher_temp) for t in teacher]
        total, pairs = cross_view_entropy(student, probs, self.student_temp)
        self.centre.update(torch.cat(list(teacher)))
        return total / pairs
