"""Each Cluster Contrast (USL / UDA) experiment composes to the official recipe.

The table is read from the official scripts, not from our YAML files: damo-cv/TransReID-SSL
``cluster-contrast-reid/{market,msmt}_{usl,uda}.sh`` (``-b 256 -a vit_small --iters 200 --eps 0.6|0.7
--self-norm --use-hard --hw-ratio 2 --num-instances 8 [--conv-stem] -pp <checkpoint>``, ``--eval-step
50`` in msmt_usl.sh) with the defaults of ``examples/cluster_contrast_train_usl.py`` (SGD lr 0.00035,
momentum 0.9, weight decay 5e-4, StepLR step 20 gamma 0.1, 50 epochs, k1 30, k2 6, DBSCAN min_samples 4,
temp 0.05, momentum 0.2, drop path 0.3, 256x128; ``vit_small`` stride 16 and ``forward`` =
normalize(BN(cls))), and CASIA-IVA-Lab/PASS-reID ``PASS_cluster_contrast_reid/market_usl_cat_singleneck.sh``
(``--feat-fusion cat``, single neck). Published (mAP / R1) in the experiment comments: TransReID-SSL
ViT-S Market 88.2 / 94.2, MSMT17 40.9 / 66.4; +ICS 89.6 / 95.3, 50.6 / 75.0; UDA MSMT17->Market
89.4 / 95.4, Market->MSMT17 47.4 / 70.8.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from reid.config import CONFIG_DIR
from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig
from reid.tasks.from_config import build_task


class Official(NamedTuple):
    dataset: str  # conf/dataset option
    eps: float
    weights_file: str
    eval_every: int = 10  # --eval-step
    stem: str = "patch"  # "ics": --conv-stem
    feature: str = "cls"
    parts: int = 0
    published: tuple[float, float] | None = None  # (mAP, R1), stated in the experiment's comment


RECIPES = {
    "usl_market": Official("market1501", 0.6, "vit_small_cfs_lup.pth", published=(88.2, 94.2)),
    "usl_msmt": Official("msmt17", 0.7, "vit_small_cfs_lup.pth", eval_every=50, published=(40.9, 66.4)),
    "usl_ics_market": Official(
        "market1501", 0.6, "vit_small_ics_cfs_lup.pth", stem="ics", published=(89.6, 95.3)
    ),
    "usl_ics_msmt": Official(
        "msmt17", 0.7, "vit_small_ics_cfs_lup.pth", eval_every=50, stem="ics", published=(50.6, 75.0)
    ),
    "uda_msmt2market": Official("market1501", 0.6, "vit_small_lup_msmt.ckpt", published=(89.4, 95.4)),
    "uda_market2msmt": Official("msmt17", 0.7, "vit_small_lup_market.ckpt", published=(47.4, 70.8)),
    "uda_ics_msmt2market": Official("market1501", 0.6, "vit_small_ics_lup_msmt.ckpt", stem="ics"),
    "uda_ics_market2msmt": Official("msmt17", 0.7, "vit_small_ics_lup_market.ckpt", stem="ics"),
    "usl_pass_market": Official(
        "market1501", 0.6, "pass_lup_vit_small.safetensors", feature="cls_parts_cat", parts=3
    ),
}
DATASET_TARGETS = {
    "market1501": "reid.data.datasets.market1501",
    "msmt17": "reid.data.datasets.msmt17",
}


CPU_DEMOS = {
    "usl_demo",
    "usl_pass_demo",
    "usl_demo_b2a",
    "uda_demo_a2b",
    "uda_ibn_demo_a2b",
    "uda_snr_demo_a2b",
}


def test_every_usl_and_uda_experiment_has_a_recipe_row():
    names = {
        p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml") if p.stem.startswith(("usl_", "uda_"))
    }
    assert names - CPU_DEMOS == set(RECIPES) | {"usl_r50_market", "usl_r50_market_infomap"}


def test_resnet50_usl_matches_the_official_readme_command(compose_config):
    """alibaba/cluster-contrast-reid README (``-b 256 -a resnet50 -d market1501 --iters 200 --momentum 0.1
    --eps 0.6 --num-instances 16``) with the script's defaults: Adam lr 0.00035, weight decay 5e-4,
    StepLR 20, 50 epochs, eval every 10, GeM pooling (``--pooling-type gem``), no ``--use-hard``, k1 30,
    k2 6, temp 0.05; ``models/resnet.py``: last stride 1, BN with frozen bias, L2 norm; ImageNet
    mean/std transforms."""
    cfg = compose_config("experiment=usl_r50_market")
    data, model = cfg.data, cfg.model
    assert data.dataset._target_.startswith(DATASET_TARGETS["market1501"])
    assert (data.batch_size, data.num_instances, data.iterations) == (256, 16, 200)
    assert list(data.image_size) == [256, 128]
    assert list(data.pixel_mean) == [0.485, 0.456, 0.406] and list(data.pixel_std) == [0.229, 0.224, 0.225]
    assert (model.backbone._target_, model.backbone.last_stride) == ("reid.models.resnet.resnet50", 1)
    assert model.pool._target_ == "reid.models.pooling.GeneralizedMeanPool" and model.pool.p == 3.0
    clustering = model.clustering
    assert (clustering.eps, clustering.min_samples, clustering.k1, clustering.k2) == (0.6, 4, 30, 6)
    assert clustering.camera_centering is False
    assert (model.memory.temperature, model.memory.momentum, model.memory["update"]) == (0.05, 0.1, "all")
    assert model.optimizer._target_ == "torch.optim.Adam"
    assert (model.optimizer.lr, model.optimizer.weight_decay) == (3.5e-4, 5e-4)
    assert model.schedule._target_ == "reid.optim.StepDecayLR"
    assert (model.schedule.step_size, model.schedule.gamma, model.schedule.steps_at) == (20, 0.1, "epoch_end")
    assert (cfg.trainer.max_epochs, cfg.trainer.check_val_every_n_epoch) == (50, 10)
    assert Path(model.weights).name == "resnet50-0676ba61.pth" and cfg.published is None
    info = DatasetInfo(num_classes=0, num_cameras=6, num_views=1)
    task = build_task(model, info, EvalConfig(), weights=None)
    assert task.net.embedding_dim == 2048 and task.net.backbone.layer4[0].conv2.stride == (1, 1)


def test_resnet50_usl_with_infomap_matches_the_official_readme_command(compose_config):
    """alibaba/cluster-contrast-reid README, ``examples/cluster_contrast_train_usl_infomap.py -b 256 -a
    resnet50 -d market1501 --iters 200 --momentum 0.1 --eps 0.5 --k1 15 --k2 4 --num-instances 16``: the
    DBSCAN command's recipe (its script's other defaults are the same) with the Infomap clustering."""
    dbscan = compose_config("experiment=usl_r50_market")
    infomap = compose_config("experiment=usl_r50_market_infomap")
    clustering = infomap.model.clustering
    assert clustering._target_ == "reid.clustering.KnnInfomap"
    assert (clustering.eps, clustering.k1, clustering.k2, clustering.camera_centering) == (0.5, 15, 4, False)
    assert infomap.task_name == "usl_r50_market_infomap" and infomap.published is None
    for cfg in (dbscan, infomap):
        with open_dict(cfg):
            cfg.model.clustering = None  # a schema key: set to null rather than deleted
            del cfg["task_name"]
    assert infomap == dbscan


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_usl_experiment_matches_the_official_script(name, compose_config):
    official = RECIPES[name]
    cfg = compose_config(f"experiment={name}")
    data, model, trainer = cfg.data, cfg.model, cfg.trainer
    assert data._target_ == "reid.data.usl_datamodule.UnlabelledDataModule"
    assert data.dataset._target_.startswith(DATASET_TARGETS[official.dataset])
    assert (data.batch_size, data.num_instances, data.iterations) == (256, 8, 200)
    assert list(data.image_size) == [256, 128]
    assert list(data.pixel_mean) == list(data.pixel_std) == [0.5, 0.5, 0.5]  # --self-norm
    transforms = data.transforms  # get_train_loader / get_test_loader (tests/data/test_transforms.py)
    assert (transforms.train_interpolation, transforms.test_interpolation) == ("bicubic", "bicubic")
    assert (transforms.flip_prob, transforms.padding, transforms.erasing.probability) == (0.5, 10, 0.5)
    assert list(transforms.erasing.fill) == [0.485, 0.456, 0.406]
    assert model._target_ == "reid.tasks.cluster_contrast.ClusterContrastTask"
    backbone = model.backbone
    assert backbone._target_ == "reid.models.vit.vit_small"
    assert (backbone.patch_size, backbone.stride, backbone.drop_path_rate) == (16, 16, 0.3)
    assert backbone.stem == official.stem and backbone.get("num_parts", 0) == official.parts
    assert model.feature == official.feature
    clustering = model.clustering
    assert (clustering.eps, clustering.min_samples, clustering.k1, clustering.k2) == (official.eps, 4, 30, 6)
    memory = model.memory
    assert (memory.temperature, memory.momentum, memory["update"]) == (0.05, 0.2, "hard")
    optimizer = model.optimizer
    assert optimizer._target_ == "torch.optim.SGD"
    assert (optimizer.lr, optimizer.momentum, optimizer.weight_decay) == (3.5e-4, 0.9, 5e-4)
    schedule = model.schedule  # StepLR(step_size=20, gamma=0.1), stepped after each epoch
    assert schedule._target_ == "reid.optim.StepDecayLR"
    assert (schedule.step_size, schedule.gamma, schedule.steps_at) == (20, 0.1, "epoch_end")
    assert trainer.max_epochs == 50 and trainer.check_val_every_n_epoch == official.eval_every
    assert trainer.precision == "32-true"
    assert Path(model.weights).name == official.weights_file
    if official.published is None:
        assert cfg.published is None  # not inherited from usl_market
    else:
        text = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()
        assert f"{official.published[0]} mAP / {official.published[1]} R1" in text
        assert (cfg.published.mAP, cfg.published.R1) == official.published
        assert cfg.published.dataset == official.dataset


@pytest.mark.parametrize("model", ["cluster_contrast", "cluster_contrast_r50"])
def test_schedule_is_the_official_step_lr_stepped_after_each_epoch(model):
    """``StepLR(step_size=20, gamma=0.1)`` driven as cluster_contrast_train_usl.py drives it (train the
    epoch, then ``lr_scheduler.step()``): torch's own StepLR, epoch by epoch, for the 50 epochs."""
    schedule = instantiate(OmegaConf.load(CONFIG_DIR / "model" / f"{model}.yaml").schedule)
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=3.5e-4)
    step_lr = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.1)
    expected = []
    for _ in range(50):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        step_lr.step()
    got = [schedule(epoch, 3.5e-4, 3.5e-4, 50) for epoch in range(50)]
    assert np.allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize(
    "name", ["uda_msmt2market", "uda_market2msmt", "uda_ics_msmt2market", "uda_ics_market2msmt"]
)
def test_uda_starts_from_the_source_models_last_epoch(name):
    """market_uda.sh / msmt_uda.sh pass ``-pp .../transformer_120.pth``: the source run's last epoch (its
    checkpoints/last.ckpt here; the source's results.json names it under tested_weights), not a best one."""
    text = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()
    weights_comment = text[: text.index("  weights: ")].rsplit("model:", 1)[-1]
    assert "last epoch" in weights_comment and "checkpoints/last.ckpt" in weights_comment
    assert "best" not in text
