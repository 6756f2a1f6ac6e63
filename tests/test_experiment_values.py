"""Each TransReID / TransReID-SSL / PASS / BoT experiment composes to the official recipe.

The tables are read from the official configs (heshuting555/TransReID configs/<dataset>/
vit_transreid_stride*.yml and vit_base.yml; damo-cv/TransReID-SSL transreid_pytorch/configs/
<dataset>/vit_small.yml, vit_small_ics.yml, vit_base_ics_384.yml; CASIA-IVA-Lab/PASS-reID
PASS_transreid/configs/<dataset>/vit_small.yml, vit_base.yml and run_pass_vit_base_*_384.sh) and
config/defaults.py (SHIFT_NUM 5, SHUFFLE_GROUP 2, DEVIDE_LENGTH 4, SIE_COE 3.0, DROP_PATH 0.1,
WARMUP_EPOCHS 5, MOMENTUM 0.9); for BoT from michuanhaohao/reid-strong-baseline
configs/softmax_triplet.yml and config/defaults.py (LAST_STRIDE 1, NECK bnneck, MARGIN 0.3,
PIXEL_MEAN/STD ImageNet) with the paper's warmup start (3.5e-5 = 0.1 x BASE_LR); for the DINO / PASS
pretraining from TransReID-SSL dino/script/vit-b_ics_cfs_lup.sh + dino/main_dino.py defaults and
PASS-reID PASS/script/vit-b_full_lup-pass.sh + PASS/main_pass.py defaults; not from our YAML files.
"""

import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from reid.config import CONFIG_DIR, register_resolvers
from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig
from reid.models.vit import vit_tiny
from reid.optim import set_epoch_lr
from reid.tasks.from_config import build_task
from tests.official import schedulers as official


class Official(NamedTuple):
    data: str
    backbone: str
    lr: float
    batch: int
    size: tuple[int, int]
    stride: int
    sie: tuple[bool, bool] | None  # (camera, view); coefficient 3.0 whenever on
    jpm_shift: int | None  # groups 2, 4 local branches whenever on
    warmup: int = 5
    instances: int = 4
    epochs: int = 120
    stem: str = "patch"  # "ics": STEM_CONV True
    parts: int = 0  # PASS part tokens (MULTI_NECK True, FEAT_FUSION 'cat': feature cat(cls, mean(parts)))
    weights_grid: tuple[int, int] | None = None  # PRETRAIN_HW_RATIO 2 on a 256x128 checkpoint: 16 x 8
    weights_file: str | None = None  # file name of MODEL.PRETRAIN_PATH, where we load the official release
    loop: str = "transreid"  # whose processor.py steps it: transreid (epoch start), transreid_ssl (end)


VIT_B, VIT_S = "reid.models.vit.vit_base", "reid.models.vit.vit_small"
PERSON = (256, 128)
TALL = (384, 128)
LUP_GRID = (16, 8)  # the LUPerson checkpoints' grid (256x128 / 16); PRETRAIN_HW_RATIO: 2 in every config
# TransReID-SSL configs/{market,msmt17}/vit_small_ics.yml and vit_base_ics_384.yml; PASS-reID
# PASS_transreid/configs/{market,msmt17}/vit_small.yml (run_pass_vit_small_*.sh) and vit_base.yml with
# INPUT.SIZE_TRAIN/TEST [384,128] (run_pass_vit_base_{Market,MSMT17}_384.sh): all SGD BASE_LR 0.0004,
# WARMUP_EPOCHS 20, IMS_PER_BATCH 64, NUM_INSTANCE 4, MAX_EPOCHS 120, STRIDE_SIZE [16, 16], no SIE/JPM.
S_ICS = {"stem": "ics", "weights_file": "vit_small_ics_cfs_lup.pth"}
B_ICS = {"stem": "ics", "weights_grid": LUP_GRID, "weights_file": "vit_base_ics_cfs_lup.pth"}
B_PASS = {"parts": 3, "weights_grid": LUP_GRID, "weights_file": "pass_vit_base_full.pth"}
LUP_RECIPES = {
    name: Official(data, backbone, 0.0004, 64, size, 16, None, None, warmup=20, loop="transreid_ssl", **extra)
    for name, data, backbone, size, extra in [
        ("vit_small_ics_lup_market", "market1501", VIT_S, PERSON, S_ICS),
        ("vit_small_ics_lup_msmt", "msmt17", VIT_S, PERSON, S_ICS),
        ("vit_base_ics_lup_market_384", "market1501", VIT_B, TALL, B_ICS),
        ("vit_base_ics_lup_msmt_384", "msmt17", VIT_B, TALL, B_ICS),
        ("pass_market", "market1501", VIT_S, PERSON, {"parts": 3}),  # our exported PASS ViT-S
        ("pass_msmt", "msmt17", VIT_S, PERSON, {"parts": 3}),
        ("pass_vit_base_market_384", "market1501", VIT_B, TALL, B_PASS),
        ("pass_vit_base_msmt_384", "msmt17", VIT_B, TALL, B_PASS),
    ]
}
OFFICIAL = {
    "transreid_market": Official("market1501", VIT_B, 0.008, 64, PERSON, 12, (True, False), 5),
    "transreid_duke": Official("dukemtmc", VIT_B, 0.008, 64, PERSON, 12, (True, False), 5),
    "transreid_occ_duke": Official("occluded_duke", VIT_B, 0.008, 64, PERSON, 11, (True, False), 5),
    "transreid_msmt": Official("msmt17", VIT_B, 0.008, 64, PERSON, 12, (True, False), 5),
    "transreid_market_384": Official("market1501", VIT_B, 0.008, 64, (384, 128), 12, (True, False), 5),
    "transreid_msmt_384": Official("msmt17", VIT_B, 0.008, 64, (384, 128), 12, (True, False), 5),
    "transreid_veri": Official("veri776", VIT_B, 0.01, 64, (256, 256), 12, (True, True), 8),
    "transreid_vehicleid": Official("vehicleid", VIT_B, 0.045, 256, (256, 256), 12, None, 8),
    "vit_baseline_market": Official("market1501", VIT_B, 0.008, 64, PERSON, 16, None, None),
    "vit_small_lup_market": Official(
        "market1501", VIT_S, 0.0004, 64, PERSON, 16, None, None, warmup=20, loop="transreid_ssl"
    ),
    "vit_small_lup_msmt": Official(
        "msmt17", VIT_S, 0.0004, 64, PERSON, 16, None, None, warmup=20, loop="transreid_ssl"
    ),
    **LUP_RECIPES,
}


class OfficialBoT(NamedTuple):
    data: str
    backbone: str
    last_stride: int = 1
    lr: float = 3.5e-4  # Adam
    weight_decay: float = 5e-4  # WEIGHT_DECAY = WEIGHT_DECAY_BIAS, BIAS_LR_FACTOR 1
    batch: int = 64
    instances: int = 4
    size: tuple[int, int] = PERSON
    epochs: int = 120
    warmup: int = 10
    warmup_start: float = 0.1
    milestones: tuple[int, ...] = (40, 70)
    gamma: float = 0.1
    label_smoothing: float = 0.1
    margin: float = 0.3
    erasing: float = 0.5
    padding: int = 10
    flip: float = 0.5


OFFICIAL_BOT = {
    "bot_r50_market": OfficialBoT("market1501", "reid.models.resnet.resnet50"),
}


class OfficialSSL(NamedTuple):
    """A DINO / PASS pretraining script's arguments (defaults of main_dino.py / main_pass.py, which agree)."""

    backbone: str
    stem: str
    parts: int  # PASS: 3 part tokens (main_pass.py builds them into the model, no flag)
    batch: int  # --batch_size_per_gpu (on --nproc_per_node=8)
    num_local: int  # --local_crops_number
    local_scale: tuple[float, float]  # --local_crops_scale
    epochs: int = 100  # --epochs
    size: tuple[int, int] = PERSON  # --height 256 --width 128
    local_size: tuple[int, int] = (128, 64)  # --crop_height 128 --crop_width 64
    global_scale: tuple[float, float] = (0.4, 1.0)  # --global_crops_scale
    out_dim: int = 65536
    norm_last_layer: bool = True
    lr: float = 5e-4  # for a batch of 256, scaled linearly
    min_lr: float = 1e-6
    warmup: int = 10
    weight_decay: tuple[float, float] = (0.04, 0.4)  # --weight_decay -> --weight_decay_end
    momentum_teacher: float = 0.996
    teacher_temp: tuple[float, float, int] = (0.04, 0.04, 0)  # warmup value, final value, warmup epochs
    clip_grad: float = 3.0
    freeze_last_layer: int = 1
    drop_path: float = 0.1  # the student's, hard-coded in main_*.py


OFFICIAL_SSL = {
    # TransReID-SSL dino/script/vit-s_cfs_lup.sh: --arch vit_small, --epochs 100, 256x128 / 128x64
    "dino_lup": OfficialSSL(VIT_S, "patch", 0, 64, 8, (0.05, 0.4)),
    # PASS-reID PASS/script/vit-s_full_lup-pass.sh: --local_crops_number 9, --local_crops_scale 0.1 0.8,
    # --batch_size_per_gpu 128
    "pass_lup": OfficialSSL(VIT_S, "patch", 3, 128, 9, (0.1, 0.8)),
    # TransReID-SSL dino/script/vit-b_ics_cfs_lup.sh: --arch ours_vit_base (ours_vit.py: PatchEmbed_VOLO with
    # stem_conv=True, stem_stride 2), --epochs 100, 256x128 / 128x64; the rest main_dino.py defaults
    "dino_lup_vit_base_ics": OfficialSSL(VIT_B, "ics", 0, 64, 8, (0.05, 0.4)),
    # PASS-reID PASS/script/vit-b_full_lup-pass.sh: --arch vit_base (patch stem), --local_crops_number 9,
    # --local_crops_scale 0.1 0.8, --batch_size_per_gpu 64, --epochs 100
    "pass_lup_vit_base": OfficialSSL(VIT_B, "patch", 3, 64, 9, (0.1, 0.8)),
}


# conf/experiment/rpe_*.yaml: the ViT-B+ICS 384 LUPerson recipes plus the relative position bias
# (rpe_*) and plus the bias and the stable RPE-triplet term (rpe_triplet_*); (headline, with the term).
RPE_EXPERIMENTS = {
    "rpe_market": ("vit_base_ics_lup_market_384", False),
    "rpe_triplet_market": ("vit_base_ics_lup_market_384", True),
    "rpe_msmt": ("vit_base_ics_lup_msmt_384", False),
    "rpe_triplet_msmt": ("vit_base_ics_lup_msmt_384", True),
}
# the loss defaults of the real recipe: the soft form (its centring, normalisation, margin and ramp left
# to the form: every key present, so a sweep needs no "+"), weight 0.5, N = 8 for the top-N forms
RPE_TRIPLET = {
    "_target_": "reid.losses.RPETripletTerm",
    "weight": 0.5,
    "num_patches": 8,
    "form": "soft",
    "normalize": "form",
    "margin": "form",
    "warmup_steps": "form",
    "temperature": 0.05,
    "layers": "last",
    "heads": "mean",
    "use_bias": True,
}


@pytest.fixture(scope="module")
def composed() -> dict[str, DictConfig]:
    """Every experiment composed once (composition is the slow part)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return {
            name: compose(config_name="run", overrides=[f"experiment={name}"])
            for name in [*OFFICIAL, *OFFICIAL_BOT, *OFFICIAL_SSL, *RPE_EXPERIMENTS]
        }


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_experiment_matches_official_values(name, composed):
    want = OFFICIAL[name]
    cfg = composed[name]
    model, data = cfg.model, cfg.data
    assert data.dataset._target_.endswith(f".load_{want.data}")
    assert model.backbone._target_ == want.backbone
    assert model.optimizer._target_ == "torch.optim.SGD"
    assert model.optimizer.lr == pytest.approx(want.lr)
    assert model.optimizer.momentum == pytest.approx(0.9)
    assert model.optimizer.weight_decay == pytest.approx(1e-4)
    assert model.param_groups.bias_lr_factor == pytest.approx(2.0)
    assert model.param_groups.weight_decay_bias == pytest.approx(1e-4)
    assert data.batch_size == want.batch
    assert data.num_instances == want.instances
    assert list(data.image_size) == list(want.size)
    assert cfg.trainer.max_epochs == want.epochs
    assert model.backbone.stride == want.stride
    assert model.backbone.patch_size == 16
    assert model.backbone.drop_path_rate == pytest.approx(0.1)
    assert model.schedule._target_ == "reid.optim.TimmCosineLR"
    assert model.schedule.warmup_epochs == want.warmup
    assert model.schedule.warmup_start_factor == pytest.approx(0.01)
    assert model.schedule.final_factor == pytest.approx(0.002)
    assert model.schedule.steps_at == {"transreid": "epoch_start", "transreid_ssl": "epoch_end"}[want.loop]
    assert model.loss.tri.margin is None  # NO_MARGIN: True
    assert model.loss.id.label_smoothing == 0.0  # IF_LABELSMOOTH: off
    assert model.neck_feat == "before"
    assert list(data.pixel_mean) == [0.5, 0.5, 0.5] and list(data.pixel_std) == [0.5, 0.5, 0.5]
    transforms = data.transforms  # datasets/make_dataloader.py (tests/data/test_transforms.py)
    assert (transforms.train_interpolation, transforms.test_interpolation) == ("bicubic", "bilinear")
    assert (transforms.flip_prob, transforms.padding, transforms.erasing.p) == (0.5, 10, 0.5)
    assert transforms.erasing.value == "random"  # timm mode='pixel'
    if want.sie is None:
        assert model.sie is None
    else:
        assert (model.sie.camera, model.sie.view) == want.sie
        assert model.sie.coefficient == pytest.approx(3.0)
    if want.jpm_shift is None:
        assert model.jpm is None
    else:
        assert (model.jpm.shift, model.jpm.groups, model.jpm.num_local) == (want.jpm_shift, 2, 4)
    assert model.backbone.stem == want.stem
    assert model.backbone.get("num_parts", 0) == want.parts
    assert model.feature == ("cls_parts" if want.parts else "cls")
    grid = model.weights_grid
    assert (None if grid is None else tuple(grid)) == want.weights_grid
    if want.weights_file is not None:
        assert model.weights.rsplit("/", 1)[-1] == want.weights_file


def _tiny_task(model_config: DictConfig, num_views: int = 2):
    """The experiment's task with a one-block tiny ViT (same stride, image size, SIE, JPM) or the tiny
    ResNet (same last stride) in place of its backbone, and no weights file."""
    model = model_config.copy()
    OmegaConf.set_struct(model, False)
    if model.backbone._target_.startswith("reid.models.vit."):
        model.backbone._target_ = "reid.models.vit.vit_tiny"
        model.backbone.depth = 1
    else:
        model.backbone._target_ = "reid.models.resnet.resnet_tiny"
    model.weights = None
    info = DatasetInfo(num_classes=6, num_cameras=3, num_views=num_views)
    return build_task(model, info, EvalConfig())


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_experiment_instantiates_with_a_tiny_backbone(name, composed):
    task = _tiny_task(composed[name].model)
    want = OFFICIAL[name]
    rows, cols = task.net.backbone.grid_size
    assert (rows, cols) == ((want.size[0] - 16) // want.stride + 1, (want.size[1] - 16) // want.stride + 1)
    num_local = 0 if want.jpm_shift is None else 4
    assert task.net.embedding_dim == 192 * (1 + num_local) * (2 if want.parts else 1)  # cat(cls, mean(parts))
    assert task.net.backbone.num_parts == want.parts
    assert task.net.backbone.patch_embed.stem_kind == want.stem
    sie = getattr(task.net.backbone, "sie_embed", None)
    if want.sie is None:
        assert sie is None
    else:
        assert sie.shape[0] == (3 if want.sie[0] else 1) * (2 if want.sie[1] else 1)
    assert isinstance(task.objective, torch.nn.Module)


def _official_epoch_lrs(name: str, task, epochs: int) -> dict[str, list[float]]:
    """Each parameter's lr in every epoch of the official loop. ``make_optimizer`` (TransReID, TransReID-SSL,
    PASS, BoT ``solver/build.py``) gives each parameter its own group: ``BASE_LR x BIAS_LR_FACTOR`` when
    "bias" is in its name, else ``BASE_LR``; the loop then steps the recipe's scheduler."""
    names = [n for n, p in task.net.named_parameters() if p.requires_grad]
    if name in OFFICIAL_BOT:
        want = OFFICIAL_BOT[name]
        peaks = [want.lr for _ in names]  # BIAS_LR_FACTOR 1
        lrs = official.bot_loop(
            peaks, epochs, want.warmup, want.warmup_start, list(want.milestones), want.gamma
        )
    else:
        want = OFFICIAL[name]
        peaks = [want.lr * (2.0 if "bias" in n else 1.0) for n in names]
        loop = {"transreid": official.transreid_loop, "transreid_ssl": official.transreid_ssl_loop}[want.loop]
        lrs = loop(peaks, want.lr, epochs, want.warmup)
    return {n: [epoch[i] for epoch in lrs] for i, n in enumerate(names)}


@pytest.mark.parametrize("name", sorted([*OFFICIAL, *OFFICIAL_BOT]))
def test_every_parameter_trains_at_the_official_lr_in_every_epoch(name, composed):
    """The task's optimiser groups under the experiment's schedule, epoch by epoch, against the official
    per-parameter groups under the official scheduler and loop (tests/official/schedulers.py), relative
    difference <= 1e-6 for every parameter of the (tiny) network and every epoch; the weight decay of
    each parameter too (WEIGHT_DECAY, or WEIGHT_DECAY_BIAS for "bias" names)."""
    cfg = composed[name]
    task = _tiny_task(cfg.model)
    optimizer = task.configure_optimizers()["optimizer"]
    epochs = cfg.trainer.max_epochs
    want = _official_epoch_lrs(name, task, epochs)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    params = dict(task.net.named_parameters())
    base = float(cfg.model.optimizer.lr)
    got = {n: [] for n in want}
    for epoch in range(epochs):
        set_epoch_lr(optimizer, task.schedule, epoch, base, epochs)
        for n in want:
            got[n].append(group_of[id(params[n])]["lr"])
    for n in want:
        np.testing.assert_allclose(got[n], want[n], rtol=1e-6, err_msg=f"{name}: {n}")
    official_decay = OFFICIAL_BOT[name].weight_decay if name in OFFICIAL_BOT else 1e-4
    for n in want:  # WEIGHT_DECAY and WEIGHT_DECAY_BIAS are equal in every official recipe here
        assert group_of[id(params[n])]["weight_decay"] == pytest.approx(official_decay), n


@pytest.mark.parametrize("name", sorted(OFFICIAL_BOT))
def test_bot_experiment_matches_official_values(name, composed):
    want = OFFICIAL_BOT[name]
    cfg = composed[name]
    model, data = cfg.model, cfg.data
    assert data.dataset._target_.endswith(f".load_{want.data}")
    assert model.backbone._target_ == want.backbone
    assert model.backbone.last_stride == want.last_stride
    assert model.net._target_ == "reid.models.cnn_reid_net.CNNReIDNet"
    assert model.net.pool._target_ == "reid.models.pooling.GlobalAvgPool"
    assert model.sie is None and model.jpm is None
    assert model.neck_feat == "after"  # TEST.NECK_FEAT
    assert cfg.eval.normalize and cfg.eval.metric == "euclidean"  # FEAT_NORM yes
    assert model.optimizer._target_ == "torch.optim.Adam"
    assert model.optimizer.lr == pytest.approx(want.lr)
    assert model.optimizer.weight_decay == pytest.approx(want.weight_decay)
    assert model.param_groups.bias_lr_factor == pytest.approx(1.0)
    assert model.param_groups.weight_decay_bias == pytest.approx(want.weight_decay)
    assert not model.param_groups.exempt_norm_and_tokens
    assert model.schedule._target_ == "reid.optim.WarmupMultiStepLR"
    assert model.schedule.steps_at == "epoch_start"  # engine/trainer.py: EPOCH_STARTED
    assert model.schedule.warmup_epochs == want.warmup
    assert model.schedule.warmup_start_factor == pytest.approx(want.warmup_start)
    assert tuple(model.schedule.milestones) == want.milestones
    assert model.schedule.gamma == pytest.approx(want.gamma)
    assert cfg.trainer.max_epochs == want.epochs
    assert model.loss.id.label_smoothing == pytest.approx(want.label_smoothing)
    assert model.loss.tri.margin == pytest.approx(want.margin)
    assert not model.loss.tri.normalize_feature
    assert model.loss.id.weight == model.loss.tri.weight == 1.0
    assert data.batch_size == want.batch and data.num_instances == want.instances
    assert list(data.image_size) == list(want.size)
    transforms = data.transforms  # data/transforms/build.py (tests/data/test_transforms.py)
    assert transforms.erasing._target_ == "reid.data.erasing.ZhongRandomErasing"
    assert transforms.erasing.probability == pytest.approx(want.erasing)
    assert list(transforms.erasing.fill) == pytest.approx([0.485, 0.456, 0.406])  # mean=cfg.INPUT.PIXEL_MEAN
    assert transforms.padding == want.padding
    assert transforms.flip_prob == pytest.approx(want.flip)
    assert (transforms.train_interpolation, transforms.test_interpolation) == ("bilinear", "bilinear")
    assert list(data.pixel_mean) == pytest.approx([0.485, 0.456, 0.406])
    assert list(data.pixel_std) == pytest.approx([0.229, 0.224, 0.225])


class OfficialCenter(NamedTuple):
    """reid-strong-baseline configs/softmax_triplet_with_center.yml + config/defaults.py: METRIC_LOSS_TYPE
    'triplet_center', IF_WITH_CENTER 'yes', CENTER_LOSS_WEIGHT 0.0005, CENTER_LR 0.5 (solver/build.py:
    plain SGD, no momentum or decay; engine/trainer.py: centre grads *= 1 / CENTER_LOSS_WEIGHT). The yml
    differs from softmax_triplet.yml only in those two MODEL keys (and OUTPUT_DIR)."""

    weight: float = 0.0005
    lr: float = 0.5
    momentum: float = 0.0


OFFICIAL_BOT_CENTER = {"bot_r50_market": OfficialCenter()}  # published 94.5 R1 / 85.9 mAP


@pytest.mark.parametrize("name", sorted(OFFICIAL_BOT_CENTER))
def test_bot_experiment_has_the_official_center_loss(name, composed):
    want = OFFICIAL_BOT_CENTER[name]
    center = composed[name].model.loss.center
    assert center._target_ == "reid.losses.CenterTerm"
    assert center.weight == pytest.approx(want.weight)
    assert center.optimizer._target_ == "torch.optim.SGD" and center.optimizer._partial_
    assert center.optimizer.lr == pytest.approx(want.lr)
    assert center.optimizer.get("momentum", 0.0) == want.momentum
    assert center.optimizer.get("weight_decay", 0.0) == 0.0
    assert center.unweighted_grad
    assert "num_classes" not in center and "feat_dim" not in center  # filled from the data and the net
    assert set(composed[name].model.loss) == {"_target_", "id", "tri", "center"}
    model = composed[name].model.copy()
    OmegaConf.set_struct(model, False)
    model.backbone._target_ = "reid.models.resnet.resnet_tiny"
    model.weights = None
    info = DatasetInfo(num_classes=6, num_cameras=3, num_views=1)
    task = build_task(model, info, EvalConfig())
    term = task.objective.terms["center"]
    assert term.loss.centers.shape == (6, 128)  # randn(num_classes, feat_dim), feat_dim = the net's
    assert term.own_grad_scale() == pytest.approx(1 / want.weight)
    assert [g.get("name") for g in task.objective.param_groups(3.5e-4)] == []  # not in the Adam


@pytest.mark.parametrize("name", sorted(OFFICIAL_BOT))
def test_bot_experiment_instantiates_with_a_tiny_backbone(name, composed):
    """With the tiny ResNet: a CNNReIDNet with one branch."""
    task = _tiny_task(composed[name].model, num_views=1)
    assert type(task.net).__name__ == "CNNReIDNet"
    assert task.net.embedding_dim == 128 and task.net.branch_weights == (1.0,)
    size = OFFICIAL_BOT[name].size
    with torch.device("meta"):  # shapes only
        feature_map = task.net.backbone.to("meta").forward_features(torch.empty(1, 3, *size))
    assert tuple(feature_map.shape[2:]) == (size[0] // 16, size[1] // 16)  # last stride 1: output stride 16


@pytest.mark.parametrize("name", sorted(OFFICIAL_SSL))
def test_pretraining_experiment_matches_official_script(name, composed):
    want = OFFICIAL_SSL[name]
    cfg = composed[name]
    model, data = cfg.model, cfg.data
    assert model._target_ == "reid.tasks.ssl_pretrain.SSLPretrainTask"
    assert data.dataset._target_.endswith(".load_luperson")
    assert model.backbone._target_ == want.backbone and model.backbone.stem == want.stem
    assert (model.backbone.patch_size, model.backbone.stride) == (16, 16)
    assert model.num_parts == want.parts
    assert data.batch_size == want.batch
    assert cfg.trainer.max_epochs == want.epochs and model.epochs in (None, want.epochs)
    augment = instantiate(data.augment)
    assert len(augment.local_regions) == want.num_local
    assert augment.global_size == want.size and augment.local_size == want.local_size
    assert tuple(data.augment.global_scale) == want.global_scale
    assert tuple(data.augment.local_scale) == want.local_scale
    assert (model.out_dim, model.norm_last_layer) == (want.out_dim, want.norm_last_layer)
    assert (model.hidden_dim, model.bottleneck_dim) == (2048, 256)  # DINOHead defaults
    assert model.lr == pytest.approx(want.lr) and model.min_lr == pytest.approx(want.min_lr)
    assert model.warmup_epochs == want.warmup
    assert (model.weight_decay, model.weight_decay_end) == pytest.approx(want.weight_decay)
    assert model.momentum_teacher == pytest.approx(want.momentum_teacher)
    teacher = (model.warmup_teacher_temp, model.teacher_temp, model.warmup_teacher_temp_epochs)
    assert teacher == pytest.approx(want.teacher_temp)
    assert (model.student_temp, model.center_momentum) == pytest.approx((0.1, 0.9))
    assert model.clip_grad == pytest.approx(want.clip_grad)
    assert model.freeze_last_layer_epochs == want.freeze_last_layer
    assert model.drop_path_rate == pytest.approx(want.drop_path)


@pytest.mark.parametrize("name", sorted(OFFICIAL_SSL))
def test_pretraining_schedules_equal_the_official_arrays_at_every_iteration(name, composed):
    """lr, weight decay, teacher momentum and teacher temperature at every iteration of the 100 epochs,
    against main_dino.py / main_pass.py on their 8 GPUs: ``utils.cosine_scheduler`` for the lr (peak
    ``lr x batch_size_per_gpu x world_size / 256``, ``min_lr``, ``warmup_epochs``), the weight decay and
    the momentum, and ``teacher_temp_schedule[epoch]`` (tests/official/schedulers.py)."""
    want, cfg = OFFICIAL_SSL[name], composed[name]
    model = cfg.model.copy()
    OmegaConf.set_struct(model, False)
    model.backbone._target_, model.backbone.depth, model.out_dim = "reid.models.vit.vit_tiny", 1, 64
    task = build_task(model, None, None)
    world, per_epoch = 8, 3  # --nproc_per_node=8; 3 iterations an epoch keep the arrays small
    task.trainer = SimpleNamespace(max_epochs=cfg.trainer.max_epochs, max_steps=-1, world_size=world)
    got = task.build_schedules(batch_size=cfg.data.batch_size, steps_per_epoch=per_epoch)
    epochs = want.epochs
    peak = want.lr * want.batch * world / 256.0
    lr = official.dino_cosine_scheduler(peak, want.min_lr, epochs, per_epoch, want.warmup)
    wd = official.dino_cosine_scheduler(*want.weight_decay, epochs, per_epoch)
    momentum = official.dino_cosine_scheduler(want.momentum_teacher, 1.0, epochs, per_epoch)
    temp = official.dino_teacher_temperature(*want.teacher_temp, epochs)
    np.testing.assert_allclose(got.lr, lr, rtol=1e-6)
    np.testing.assert_allclose(got.weight_decay, wd, rtol=1e-6)
    np.testing.assert_allclose(got.momentum, momentum, rtol=1e-6)
    np.testing.assert_allclose(
        got.teacher_temp, [temp[i // per_epoch] for i in range(epochs * per_epoch)], rtol=1e-6
    )


def test_teacher_temperature_warms_up_per_epoch_as_dinos():
    """facebookresearch/dino's defaults (0.04 -> 0.07 over 30 epochs): the temperature is indexed by the
    epoch, not spread over the iterations (the old per-iteration linspace fails here)."""
    from reid.losses.dino import teacher_temperature_schedule

    got = teacher_temperature_schedule(0.04, 0.07, 30, 100, steps_per_epoch=5)
    want = official.dino_teacher_temperature(0.04, 0.07, 30, 100)
    np.testing.assert_allclose(got, np.repeat(want, 5), rtol=1e-6)


def _official_lup_checkpoint(path: Path, stem: str, parts: int) -> dict[str, torch.Tensor]:
    """A LUPerson teacher checkpoint at 256x128 (16 x 8 grid) under the official names: TransReID-SSL DINO
    (``patch_embed.conv.*``, ``pos_embed`` = [CLS] + patches) or PASS (``part_token{i}``, ``cls_pos``,
    ``part{i}_pos``, patch-only ``pos_embed``), inside ``{"teacher": {"backbone.<key>": ...}}``.
    Returns the backbone tensors under the official names."""
    net = vit_tiny(img_size=PERSON, stem=stem, num_parts=parts, depth=1)
    state = {k.replace("patch_embed.stem.", "patch_embed.conv."): v for k, v in net.state_dict().items()}
    state.pop("pos_grid", None)  # ours only: the official checkpoints record no grid
    if parts:
        for i in range(parts):
            state[f"part_token{i + 1}"] = state["part_tokens"][:, i : i + 1]
            state[f"part{i + 1}_pos"] = state["part_pos"][:, i : i + 1]
        del state["part_tokens"], state["part_pos"]
    else:
        state["pos_embed"] = torch.cat([state.pop("cls_pos"), state["pos_embed"]], dim=1)
    teacher = {f"backbone.{k}": v for k, v in state.items()} | {"head.last_layer.weight_g": torch.ones(8, 1)}
    torch.save({"teacher": teacher}, path)
    return state


@pytest.mark.parametrize(
    ("name", "stem", "parts"),
    [("vit_base_ics_lup_market_384", "ics", 0), ("pass_vit_base_market_384", "patch", 3)],
)
def test_384_experiment_loads_a_256x128_lup_checkpoint(name, stem, parts, composed, tmp_path):
    """The hand-off PRETRAIN_HW_RATIO 2 stands for: a 16 x 8 LUPerson grid bilinearly resized to 24 x 8
    (official ``resize_pos_embed``: F.interpolate, mode bilinear, align_corners False), every other
    backbone tensor (ICS stem included) copied as it is."""
    official = _official_lup_checkpoint(tmp_path / "lup.pth", stem, parts)
    model = composed[name].model.copy()
    OmegaConf.set_struct(model, False)
    model.backbone._target_ = "reid.models.vit.vit_tiny"
    model.backbone.depth = 1
    model.weights = str(tmp_path / "lup.pth")
    info = DatasetInfo(num_classes=6, num_cameras=3, num_views=1)
    backbone = build_task(model, info, EvalConfig()).net.backbone
    assert backbone.grid_size == (24, 8)
    patches = official["pos_embed"][:, -128:]
    grid = patches.reshape(1, 16, 8, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(24, 8), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(backbone.pos_embed, want)
    cls_pos = official["cls_pos"] if parts else official["pos_embed"][:, :1]
    torch.testing.assert_close(backbone.cls_pos, cls_pos)
    ours = backbone.state_dict()
    for key, value in official.items():
        if key.startswith(("patch_embed.", "blocks.", "norm.", "cls_token")):
            torch.testing.assert_close(ours[key.replace("patch_embed.conv.", "patch_embed.stem.")], value)
    if parts:
        torch.testing.assert_close(
            backbone.part_tokens, torch.cat([official[f"part_token{i}"] for i in (1, 2, 3)], 1)
        )
        torch.testing.assert_close(
            backbone.part_pos, torch.cat([official[f"part{i}_pos"] for i in (1, 2, 3)], 1)
        )
    assert any(k.startswith("patch_embed.stem.") for k in ours) == (stem == "ics")


@pytest.mark.parametrize("name", sorted(RPE_EXPERIMENTS))
def test_rpe_experiment_is_its_headline_recipe_plus_the_rpe_keys(name, composed):
    """The headline's official values (test_experiment_matches_official_values) carry over untouched:
    the composed config equals vit_base_ics_lup_*_384's except task_name, the bias switch and the term."""
    headline, with_term = RPE_EXPERIMENTS[name]
    ours = OmegaConf.to_container(composed[name])
    base = OmegaConf.to_container(composed[headline])
    assert ours["model"]["backbone"].pop("rel_pos_bias") == {"shared": False}
    assert base["model"]["backbone"].pop("rel_pos_bias") is None
    assert ours["model"]["loss"].pop("rpe_triplet", None) == (RPE_TRIPLET if with_term else None)
    assert "rpe_triplet" not in base["model"]["loss"]
    assert (ours.pop("task_name"), base.pop("task_name")) == (name, headline)
    assert ours.pop("published") is None and base.pop("published") is not None  # the headline's numbers
    assert ours == base


@pytest.mark.parametrize("name", ["rpe_triplet_market", "rpe_triplet_msmt"])
def test_rpe_triplet_experiment_builds_the_soft_term_and_the_bias(name, composed):
    model = composed[name].model.copy()
    OmegaConf.set_struct(model, False)
    model.backbone._target_ = "reid.models.vit.vit_tiny"
    model.backbone.depth = 2
    model.weights = None
    info = DatasetInfo(num_classes=6, num_cameras=3, num_views=1)
    task = build_task(model, info, EvalConfig())
    term = task.objective.terms["rpe_triplet"]
    assert (term.selection, term.center, term.normalize, term.margin, term.warmup_steps) == (
        "soft",
        True,
        True,
        0.1,
        0,
    )
    assert term.weight_at(0) == 0.5
    biases = [
        block for block in task.net.backbone.modules() if type(block).__name__ == "RelativePositionBias"
    ]
    assert len(biases) == 2 and biases[0].grid == (24, 8)  # one table per layer, 384 x 128 at stride 16


README = CONFIG_DIR.parent / "README.md"


def _readme_rpe_grid() -> list[str]:
    """The overrides of the README's RPE ablation (the multirun over form x num_patches x ...)."""
    from tests.test_readme_commands import readme_commands

    (command,) = [c for c in readme_commands(README.read_text()) if "rpe_triplet.form=" in c and " -m " in c]
    arguments = shlex.split(command)
    return [a for a in arguments[arguments.index("reid.run") + 1 :] if a not in ("-m", "--multirun")]


def test_the_readme_rpe_ablation_composes_every_job_and_builds_every_term():
    """The README's one-command ablation (num_patches x weight x margin x form x shared tables, SLURM
    launcher): the basic sweeper's jobs, each composed as the multirun would and its term built; every
    key is set without "+", and the naive jobs are the reported form whatever margin they are given."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweep = [a for a in _readme_rpe_grid() if not a.startswith(("hydra/launcher", "hydra.launcher"))]
    assert not any(a.startswith("+") for a in sweep)
    (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(sweep), None)
    assert len(jobs) == 2 * 2 * 2 * 3 * 2
    register_resolvers()
    seen = set()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for job in jobs:
            cfg = compose(config_name="run", overrides=job)
            term = instantiate(cfg.model.loss.rpe_triplet)
            seen.add((term.form, term.num_patches, term.weight, cfg.model.loss.rpe_triplet.margin,
                      cfg.model.backbone.rel_pos_bias.shared))  # fmt: skip
            if term.form == "naive":
                assert (term.normalize, term.margin, term.warmup_steps) == (False, None, 0)
            else:
                assert term.margin == cfg.model.loss.rpe_triplet.margin
    assert len(seen) == len(jobs)
    launcher = [a for a in _readme_rpe_grid() if a.startswith(("hydra/launcher", "hydra.launcher"))]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="run", overrides=[*jobs[0], *launcher], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.gpus_per_node == 1


# conf/experiment/*2duke, *2market: a supervised recipe on the source plus evaluation targets; the test
# scores the last epoch (monitor null: no model selection on the target). (base recipe, model option,
# source data option, targets).
CROSS_DOMAIN = {
    "bot_r50_market2duke": ("bot_r50_market", "bot_r50", "market1501", ["dukemtmc", "market1501"]),
    "bot_r50_ibn_market2duke": ("bot_r50_market", "bot_r50_ibn", "market1501", ["dukemtmc", "market1501"]),
    "snr_market2duke": ("bot_r50_market", "snr_r50", "market1501", ["dukemtmc", "market1501"]),
    "snr_duke2market": ("bot_r50_market", "snr_r50", "dukemtmc", ["market1501", "dukemtmc"]),
}


@pytest.mark.parametrize("name", sorted(CROSS_DOMAIN))
def test_cross_domain_experiment_is_its_source_recipe_plus_targets(name):
    """The BoT data/optimiser recipe (test_bot_experiment_matches_official_values) carries over: the
    composed config equals ``bot_r50_market`` composed with the same model and source data options,
    except task_name and the targets."""
    base_name, model, source, targets = CROSS_DOMAIN[name]
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        ours = OmegaConf.to_container(compose(config_name="run", overrides=[f"experiment={name}"]))
        base = OmegaConf.to_container(
            compose(
                config_name="run",
                overrides=[f"experiment={base_name}", f"model={model}", f"data={source}"],
            )
        )
    if model == "bot_r50_ibn":  # the IBN-Net ImageNet weights in place of torchvision's
        assert ours["model"].pop("weights").endswith("weights/resnet50_ibn_a-d9d0bb7b.pth")
        base["model"].pop("weights")
    assert ours["data"].pop("test_datasets") == targets
    assert base["data"].pop("test_datasets") is None
    assert ours["callbacks"]["model_checkpoint"]["monitor"] is None  # selection=last: nothing chosen
    assert (ours.pop("task_name"), base.pop("task_name")) == (name, base_name)
    published = base.pop("published")  # bot_r50_market's numbers hold for its own model only
    assert ours.pop("published") == (published if model == "bot_r50" else None)
    assert ours == base


# conf/experiment/*_md2msmt: multi-source domain generalisation (train on Market-1501 + DukeMTMC-reID,
# test on the unseen MSMT17). (single-source recipe it extends, added sources, targets).
MULTI_SOURCE = {"snr_md2msmt": ("snr_market2duke", ["dukemtmc"], ["msmt17"])}


@pytest.mark.parametrize("name", sorted(MULTI_SOURCE))
def test_multi_source_experiment_is_its_single_source_recipe_plus_sources(name):
    """The SNR / BoT recipe of the Market-1501 experiment carries over unchanged (model, optimiser, data
    sizes, last-epoch test): the composed config equals it except task_name, the added train sources and
    the targets; data.dataset stays market1501 and no published number is inherited."""
    base_name, sources, targets = MULTI_SOURCE[name]
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        ours = OmegaConf.to_container(compose(config_name="run", overrides=[f"experiment={name}"]))
        base = OmegaConf.to_container(compose(config_name="run", overrides=[f"experiment={base_name}"]))
    assert ours["data"]["dataset"]["_target_"] == "reid.data.datasets.market1501.load_market1501"
    assert ours["data"].pop("extra_train_datasets") == sources
    assert base["data"].pop("extra_train_datasets") is None
    assert ours["data"].pop("test_datasets") == targets
    base["data"].pop("test_datasets")
    assert ours["callbacks"]["model_checkpoint"]["monitor"] is None  # no model selection on the target
    assert (ours.pop("task_name"), base.pop("task_name")) == (name, base_name)
    assert ours.pop("published") is None and base.pop("published") is None
    assert ours == base
