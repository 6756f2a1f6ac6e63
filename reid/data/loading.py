"""What the datamodules share about DataLoaders under Lightning: the rank layout and worker options."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


def world_of(datamodule: L.LightningDataModule) -> tuple[int, int]:
    """``(world size, global rank)`` of the trainer the datamodule is attached to; ``(1, 0)`` alone."""
    trainer = getattr(datamodule, "trainer", None)
    return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)


def loader_options(num_workers: int) -> dict[str, Any]:
    """DataLoader keywords: decode in ``num_workers`` persistent workers; pin memory only for CUDA."""
    return {
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }
