"""Shared fixtures: Hydra composition of `conf/` with test-sized overrides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from reid.config import CONFIG_DIR, register_resolvers

register_resolvers()

TINY_RUN = [
    "data=synthetic_tiny",
    "trainer=cpu",
    "logger=csv",
    "trainer.max_epochs=2",
    "trainer.check_val_every_n_epoch=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "validate_before_fit=false",
]


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root per test session, so the tiny synthetic tree is rendered once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def compose_config(tmp_path: Path, tiny_data_dir: Path) -> Callable[..., DictConfig]:
    """``compose_config(*overrides)`` -> the run config with output/data paths in tmp dirs."""

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("run", overrides=[f"paths.data_dir={tiny_data_dir}", *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    return _compose
