"""Tiny trained runs of each supervised and Cluster Contrast family, one per session, in real run folders.

``trained_run(family)`` fits one step of the family on the tiny synthetic tree and returns the run
folder: ``.hydra/config.yaml`` (the composed config, unresolved, as ``reid.run`` leaves it),
``checkpoints/last.ckpt`` and ``results.json``. ``transreid`` (SIE + JPM) runs as a ``python -m reid.run``
process, so one folder is exactly what a user's run writes; the others run in process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from reid.config import CONFIG_DIR
from reid.data.records import DatasetInfo
from reid.tasks.from_config import build_task

TINY_EXPERIMENT = [
    "data=synthetic_tiny",
    "data.image_size=[64,32]",
    "data.num_workers=0",
    "model.weights=null",
]
"""An experiment's model on the tiny tree (the demo experiments resize to 96 x 48 with a loader process)."""

FAMILIES: dict[str, list[str]] = {
    "vit": ["data=synthetic_tiny", "model=vit_tiny"],
    "transreid": ["data=synthetic_tiny", "model=transreid_tiny"],  # SIE (3 cameras) + JPM
    "pass": ["experiment=pass_demo_finetune", *TINY_EXPERIMENT],  # cls + 3 part tokens, input norm
    "rpe": ["experiment=rpe_demo", *TINY_EXPERIMENT],  # relative position bias in every layer
    "bot": ["data=synthetic_tiny", "model=bot_tiny"],  # BoT ResNet, feature after the BNNeck
    "bot_ibn": ["data=synthetic_tiny", "model=bot_tiny_ibn"],  # IBN-a: instance norm in stages 1-3
    "snr": ["data=synthetic_tiny", "model=snr_tiny"],  # SNR blocks after every stage
    # Cluster Contrast (ClusterContrastTask: normalize(BN(feature)), no classifier, no SIE), each clustering
    # the 48 tiny training images before its step: the tiny ViT of the USL demo (clusters at its eps 0.6)
    "usl_vit": ["experiment=usl_demo"],
    # the tiny ResNet of the UDA demo (average pooling, camera-centred clustering) from scratch on the tiny
    # unlabelled tree; its untrained features lie close: at eps 0.6 DBSCAN makes one cluster, whose
    # ClusterNCE is 0 (the step would change no weight); at 0.3 it makes several (4 with seed 0)
    "usl_cnn": [
        "experiment=uda_demo_a2b",
        "data=usl_synthetic_tiny",
        "data.test_datasets=null",
        "model.weights=null",
        "model.clustering.eps=0.3",
    ],
}

ONE_STEP = [
    "trainer=cpu",
    "logger=csv",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=0",
    "test=false",
    "evaluate_before_fit=false",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
]


def _fit_in_process(overrides: list[str], out: Path) -> None:
    from reid.run import run

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    (out / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # what @hydra.main saves: unresolved
    run(cfg)


def _fit_as_process(overrides: list[str], out: Path) -> None:
    command = [sys.executable, "-m", "reid.run", *overrides, f"hydra.run.dir={out}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Callable[[str], Path]:
    runs: dict[str, Path] = {}

    def _run(family: str) -> Path:
        if family not in runs:
            out = tmp_path_factory.mktemp(f"run_{family}")
            overrides = [*FAMILIES[family], *ONE_STEP, f"paths.data_dir={tiny_data_dir}"]
            (_fit_as_process if family == "transreid" else _fit_in_process)(overrides, out)
            runs[family] = out
        return runs[family]

    return _run


def untrained_run_folder(cfg: DictConfig, info: DatasetInfo, run_dir: Path, **checkpoint: Any) -> Any:
    """A run folder as ``reid.run`` leaves it (``.hydra/config.yaml``, ``checkpoints/last.ckpt``) for the
    task of ``cfg.model`` built for ``info`` and not trained; ``checkpoint``: more checkpoint entries (e.g.
    ``hyper_parameters``). Returns the task."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    task = build_task(cfg.model, info, instantiate(cfg.eval))
    saved = {"state_dict": task.state_dict(), "pytorch-lightning_version": "2.6.6", **checkpoint}
    torch.save(saved, run_dir / "checkpoints" / "last.ckpt")
    return task
