"""Tiny unlabelled image folders, datamodules and DINO/PASS tasks for the SSL tests."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reid.data.multicrop import MultiCropAugmentation
from reid.data.records import UNLABELLED, Record, ReIDDataset
from reid.data.ssl_datamodule import SSLDataModule
from reid.models.vit import vit_tiny
from reid.tasks.ssl_pretrain import SSLPretrainTask


def write_images(folder: Path, count: int, size: tuple[int, int] = (32, 16), seed: int = 0) -> list[Path]:
    """``count`` random RGB images of ``size`` (h, w) under ``folder/<i % 3>/img_<i>.png``."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"cam{i % 3}" / f"img_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def folder_dataset(paths: list[Path]) -> ReIDDataset:
    return ReIDDataset("tiny", [Record(str(p), UNLABELLED, 0) for p in paths], [], [])


def tiny_datamodule(paths: list[Path], num_parts: int, batch_size: int = 4) -> SSLDataModule:
    augment = MultiCropAugmentation(
        global_size=(32, 16), local_size=(16, 8), num_local=2, num_regions=num_parts,
        locals_per_region=1 if num_parts else None,
    )  # fmt: skip
    return SSLDataModule(
        functools.partial(folder_dataset, paths), augment, batch_size=batch_size, num_workers=0
    )


def tiny_task(num_parts: int, **overrides) -> SSLPretrainTask:
    """A tiny DINO (num_parts 0) or PASS task, initialised from seed 0."""
    torch.manual_seed(0)
    backbone = functools.partial(
        vit_tiny, img_size=(32, 16), patch_size=8, stride=8, embed_dim=32, depth=1, num_heads=2
    )
    kwargs = {
        "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "warmup_epochs": 1, "lr": 0.01,
        "drop_path_rate": 0.1, **overrides,
    }  # fmt: skip
    return SSLPretrainTask(backbone, functools.partial(torch.optim.AdamW), num_parts=num_parts, **kwargs)
