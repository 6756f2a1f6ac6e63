"""Runs in each of two gloo processes of tests/training/test_global_batch.py: one half of a fixed batch
through a small BN network, the ID loss of its half and the triplet loss of the gathered batch; the
parameter gradients are averaged over the processes as DDP averages them, and written out."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from reid.losses.triplet import TripletLoss
from reid.training.sync_batchnorm import convert_to_global_batchnorm

WORLD, BATCH = 2, 8


def network() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 6),
        nn.BatchNorm1d(6), nn.Linear(6, 3),
    )  # fmt: skip
    net[5].bias.requires_grad_(False)  # a BNNeck's frozen bias
    return net


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 6, 6, generator=generator), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])


def step(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ID loss (per-sample mean) + batch-hard soft-margin triplet on the features before the last BN."""
    features = net[:5](images)
    logits = net[6](net[5](features))
    loss = F.cross_entropy(logits, labels) + TripletLoss()(features, labels)
    loss.backward()
    return loss.detach()


def run(rank: int, port: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        net = convert_to_global_batchnorm(network())
        images, labels = batch()
        share = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        loss = step(net, images[share], labels[share])
        dist.all_reduce(loss)
        grads = {}
        for name, param in net.named_parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                grads[name] = param.grad / WORLD  # DDP's average
        buffers = {name: value.clone() for name, value in net.named_buffers()}
        torch.save({"loss": loss / WORLD, "grads": grads, "buffers": buffers}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    run(int(sys.argv[1]), sys.argv[2], sys.argv[3])
