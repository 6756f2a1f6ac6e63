"""Hydra/OmegaConf set-up shared by the entry point, tools and tests."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
"""The `conf/` tree of this checkout (the package is installed in editable mode)."""


def _wandb_offline() -> bool:
    """wandb logs offline unless an API key is configured (runs can be synced later)."""
    return not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE", "offline") != "online"


def register_resolvers() -> None:
    """Idempotently register the custom resolvers the configs use."""
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", _wandb_offline)
    if not OmegaConf.has_resolver("pid"):  # run folder names (conf/hydra/default.yaml)
        OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True)
