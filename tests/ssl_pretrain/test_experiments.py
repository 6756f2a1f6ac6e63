"""The pretraining experiments compose to the official recipes and run end to end in tiny form."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from reid.run import run
from tests.conftest import TINY_SSL_DATA

# facebookresearch/dino + TransReID-SSL dino/main_dino.py, PASS-reID script/vit-s_full_lup-pass.sh
OFFICIAL = {
    "dino_lup": {"num_parts": 0, "batch": 64, "num_local": 8, "local_scale": [0.05, 0.4]},
    "pass_lup": {"num_parts": 3, "batch": 128, "num_local": 9, "local_scale": [0.1, 0.8]},
}


@pytest.mark.parametrize("experiment", sorted(OFFICIAL))
def test_pretraining_experiment_matches_the_official_recipe(compose_config, experiment: str) -> None:
    cfg = compose_config(f"experiment={experiment}")
    official, model, data = OFFICIAL[experiment], cfg.model, cfg.data
    assert model.backbone._target_ == "reid.models.vit.vit_small" and model.num_parts == official["num_parts"]
    assert (model.out_dim, model.bottleneck_dim, model.lr, model.min_lr) == (65536, 256, 5e-4, 1e-6)
    assert (model.warmup_epochs, model.weight_decay, model.weight_decay_end) == (10, 0.04, 0.4)
    assert (model.momentum_teacher, model.teacher_temp, model.student_temp) == (0.996, 0.04, 0.1)
    assert (model.clip_grad, model.freeze_last_layer_epochs, cfg.trainer.max_epochs) == (3.0, 1, 100)
    assert data.batch_size == official["batch"] and list(data.augment.local_scale) == official["local_scale"]
    augment = instantiate(data.augment)
    assert len(augment.local_regions) == official["num_local"]
    assert augment.global_size == (256, 128) and augment.local_size == (128, 64)


@pytest.mark.parametrize(
    ("experiment", "feature", "parts"), [("pass_market", "cls_parts", 3), ("dino_market", "cls", None)]
)
def test_fine_tuning_experiments_load_the_exported_backbone(
    compose_config, experiment, feature, parts
) -> None:
    cfg = compose_config(f"experiment={experiment}")
    assert cfg.model.feature == feature and cfg.model.backbone.get("num_parts") == parts
    assert str(cfg.model.weights).endswith(".safetensors") and cfg.model.optimizer.lr == 0.0004


@pytest.mark.parametrize(
    ("experiment", "model"),
    [("pass_lup", "pass_tiny"), ("dino_lup", "dino_tiny")],
)
def test_tiny_pretraining_runs_through_reid_run(compose_config, experiment: str, model: str) -> None:
    cfg = compose_config(
        f"experiment={experiment}", f"model={model}", "data=synthetic_ssl", "trainer=cpu", "logger=csv",
        "data.num_workers=0", "data.batch_size=8", "trainer.max_steps=2", "trainer.max_epochs=1",
        "test=true", "callbacks.progress_bar=null", "trainer.enable_model_summary=false", *TINY_SSL_DATA,
    )  # fmt: skip
    summary = run(cfg)
    assert set(summary["test"]) == {"mAP", "R1", "R5", "R10", "mINP"}
    assert 0.0 < summary["test"]["mAP"] <= 100.0
