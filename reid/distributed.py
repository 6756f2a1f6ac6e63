"""The process group as the losses and samplers see it: world size, rank, and gathering a batch.

``N`` processes train as one when every loss that compares the samples of a batch with each other
(batch-hard triplet mining, the RPE-triplet loss, SNR's causality triplets, the cluster memory's update)
sees the *global* batch. :func:`gather_with_grad` concatenates every rank's rows in rank order and is
differentiable: its backward sums the gradient every rank's loss sends to each row (an all-reduce) and
hands each rank its own rows' part. Every rank then computes the same global loss ``L``; rank ``r``'s
rows receive ``sum_r' dL_r'/df_r = N dL/df_r``, and DDP's average of the parameter gradients over the
``N`` ranks gives ``sum_r dL/df_r df_r/dtheta``: the one-process gradient. Per-sample losses (the ID
loss, the center loss) need no gathering: each rank's mean over its equal share, averaged by DDP, is
the global mean. Without an initialised process group (or with one process) everything is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """``(world size, rank)`` of the default process group; ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 (equal row counts on every rank); backward: all-reduce, own slice."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        size, rank = world()
        parts = [torch.empty_like(tensor) for _ in range(size)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows, ctx.rank = tensor.shape[0], rank
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's copy of the loss sent a gradient to every row
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` (same shape on all) concatenated along dim 0, differentiable (module
    docstring); ``tensor`` itself with one process."""
    size, _ = world()
    if size == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def gather(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` concatenated along dim 0, without gradient (labels, memory updates)."""
    size, _ = world()
    if size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)
