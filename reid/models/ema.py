"""Exponential moving average of the student into the teacher (DINO Sec. 3.1, "momentum encoder").

    theta_t <- m theta_t + (1 - m) theta_s,   m from a cosine schedule 0.996 -> 1.

Buffers (none in a ViT + DINO head) are copied, not averaged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: every teacher parameter p_t <- m p_t + (1 - m) p_s (matched by name)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"ema_update_: momentum must lie in [0, 1], got {momentum}")
    student_params = dict(student.named_parameters())
    teacher_params = dict(teacher.named_parameters())
    if student_params.keys() != teacher_params.keys():
        missing = sorted(student_params.keys() ^ teacher_params.keys())[:5]
        raise ValueError(f"ema_update_: teacher and student parameters differ, e.g. {missing}")
    names = list(teacher_params)
    teacher_list: list[Tensor] = [teacher_params[n] for n in names]
    student_list = [student_params[n].detach() for n in names]
    torch._foreach_lerp_(teacher_list, student_list, 1.0 - momentum)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers()):
        t_buf.copy_(s_buf)
