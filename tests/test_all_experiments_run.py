"""Every experiment composes, instantiates and runs a fast_dev_run on CPU with tiny variants.

The experiment's own structure (data module, task, heads, JPM/SIE, schedules, callbacks) is kept;
only sizes are swapped: the synthetic tiny dataset for the real one, `vit_tiny` for ViT-S/B,
`resnet_tiny` for the ResNets, small images and batches, a small DINO head.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from reid.config import CONFIG_DIR
from reid.run import run
from tests.conftest import TINY_SSL_DATA

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
TINY_DATASET = [
    "data.dataset.num_train_ids=8",
    "data.dataset.num_test_ids=6",
    "data.dataset.num_cameras=3",
    "data.dataset.images_per_id=6",
    "data.dataset.num_distractors=10",
    "data.dataset.num_junk=5",
    "data.num_workers=0",
]
COMMON = [
    "trainer=cpu",
    "logger=csv",
    "trainer.fast_dev_run=1",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "test=false",
    "evaluate_before_fit=false",
]


TINY_BACKBONES = {  # a ResNet factory -> the tiny one of its family (IBN-a stays IBN-a)
    "reid.models.resnet.resnet50_ibn_a": "reid.models.resnet.resnet_tiny_ibn_a",
}


def _kind(name: str, compose_config) -> tuple[bool, list[str]]:
    """(is a self-supervised experiment, the overrides to the tiny backbone of its family, to tiny
    evaluation targets for a cross-domain experiment and to a tiny second source for a multi-source one)."""
    cfg = compose_config(f"experiment={name}")
    backbone = cfg.model.backbone
    key = "model.backbone._target_"
    if backbone._target_ == "reid.models.snr.snr_resnet":  # the ResNet inside the SNR wrapper
        key, backbone = "model.backbone.resnet._target_", backbone.resnet
    if backbone._target_.startswith("reid.models.resnet."):
        tiny = TINY_BACKBONES.get(backbone._target_, "reid.models.resnet.resnet_tiny")
    else:
        tiny = "reid.models.vit.vit_tiny"
    overrides = [f"{key}={tiny}"]
    if OmegaConf.select(cfg, "data.test_datasets") is not None:  # cross-domain: two tiny targets
        overrides.append("data.test_datasets=[synthetic_duke_tiny,synthetic_tiny]")
    if OmegaConf.select(cfg, "data.extra_train_datasets") is not None:  # multi-source: a tiny second source
        overrides.append("data.extra_train_datasets=[synthetic_duke_tiny]")
    if OmegaConf.select(cfg, "model.schedule.warmup_epochs") is not None:  # a warm-up longer than the run
        overrides.append("model.schedule.warmup_epochs=0")
    return "SSL" in cfg.model._target_, overrides


def _overrides(name: str, ssl: bool, data_dir) -> list[str]:
    root = f"data.dataset.root={data_dir}/synthetic_tiny"
    if ssl:
        return [
            "data=synthetic_ssl",
            *TINY_SSL_DATA,
            "data.batch_size=4",
            "data.augment.num_local=2",
            "data.augment.locals_per_region=1",
            "model.out_dim=256",
            "model.hidden_dim=64",
            "model.bottleneck_dim=32",
            "model.warmup_epochs=0",
        ]
    return [
        "data/dataset=synthetic",
        root,
        *TINY_DATASET,
        "data.image_size=[64,32]",
        "data.batch_size=8",
        "data.num_instances=2",
        "data.test_batch_size=512",
        "model.weights=null",
    ]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_fast_dev_run_with_tiny_variants(name, compose_config, tiny_data_dir):
    ssl, tiny = _kind(name, compose_config)
    cfg = compose_config(f"experiment={name}", *COMMON, *tiny, *_overrides(name, ssl, tiny_data_dir))
    OmegaConf.resolve(cfg)  # every interpolation resolves
    summary = run(cfg)
    assert summary["output_dir"] == cfg.paths.output_dir
