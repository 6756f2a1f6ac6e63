"""Shared fixtures: Hydra composition of `conf/` with test-sized overrides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from reid.config import CONFIG_DIR, register_resolvers
from reid.config_store import store_configs

register_resolvers()
store_configs()  # the group schemas and the registered datasets, as reid.run stores them before composing

TINY_RUN = [
    "data=synthetic_tiny",
    "trainer=cpu",
    "logger=csv",
    "trainer.max_epochs=2",
    "trainer.check_val_every_n_epoch=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "evaluate_before_fit=false",
]

TINY_MARKET = {  # the synthetic_tiny tree (conf/data/synthetic_tiny.yaml), one tree for every test
    "num_train_ids": 8,
    "num_test_ids": 6,
    "num_cameras": 3,
    "images_per_id": 6,
    "num_distractors": 10,
    "num_junk": 5,
}
TINY_SSL_DATA = [  # `data=synthetic_ssl` at test size: a 40-image LUPerson-like tree + the tiny monitor
    "data.dataset.root=${paths.data_dir}/synthetic_luperson_tiny",
    "data.dataset.num_images=40",
    "data.dataset.num_scenes=10",
    "data.dataset.num_identities=15",
    "data.monitor_dataset.root=${paths.data_dir}/synthetic_tiny",
    *(f"data.monitor_dataset.{key}={value}" for key, value in TINY_MARKET.items()),
    "data.num_workers=0",
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


def epoch_steps(cfg: DictConfig, epochs: int) -> list[int]:
    """The training steps of each of the first ``epochs`` epochs of a supervised run composed as ``cfg``:
    the P x K sampler ends an epoch as the official RandomIdentitySampler does, after a number of batches
    its draws decide (``reid.data.samplers``), so tests count them instead of assuming a fixed length."""
    from hydra.utils import instantiate

    from reid.data.samplers import IdentitySampler

    datamodule = instantiate(cfg.data)
    datamodule.setup()
    sampler = IdentitySampler(
        [r.pid for r in datamodule.train_data.train],
        batch_size=datamodule.batch_size,
        num_instances=datamodule.num_instances,
        seed=datamodule.seed,
    )
    return [sampler.batches_in_epoch(epoch) for epoch in range(epochs)]


# The tiny trained runs of every family (tests/tools/trained_runs.py), one set per session, for the tool
# and picture tests of any folder. Imported last: that module imports TINY_* from here.
from tests.tools.trained_runs import trained_run  # noqa: E402, F401
