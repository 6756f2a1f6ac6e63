"""The tiny BoT task (``bot_r50.yaml`` recipe on ``bot_tiny.yaml``'s ResNet) and one P x K batch for it,
built in process for the task and loss tests."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from reid.config_store import compose_option
from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig
from reid.tasks import TransReIDTask
from reid.tasks.from_config import build_task

IMAGE_SIZE = [64, 32]


def tiny_bot_task(num_classes: int = 4, **model) -> TransReIDTask:
    """``model.<key>=value`` for each keyword (dotted keys), seeded; 2 cameras."""
    cfg = OmegaConf.create({"data": {"image_size": IMAGE_SIZE}})
    cfg.model = compose_option("model", "bot_tiny")
    for key, value in model.items():
        OmegaConf.update(cfg, f"model.{key}", value, force_add=True)
    torch.manual_seed(0)
    info = DatasetInfo(num_classes=num_classes, num_cameras=2, num_views=1)
    return build_task(cfg.model, info, EvalConfig())


def bot_batch() -> dict[str, torch.Tensor]:
    """8 images of 4 identities x 2 cameras."""
    g = torch.Generator().manual_seed(1)
    return {
        "image": torch.randn(8, 3, *IMAGE_SIZE, generator=g),
        "pid": torch.arange(4).repeat_interleave(2),
        "camid": torch.arange(8) % 2,
        "viewid": torch.zeros(8, dtype=torch.long),
        "index": torch.arange(8),
    }
