"""Each TransReID / TransReID-SSL / BoT experiment composes to the official recipe.

The tables are read from the official configs (heshuting555/TransReID configs/<dataset>/
vit_transreid_stride*.yml and vit_base.yml; damo-cv/TransReID-SSL transreid_pytorch/configs/
<dataset>/vit_small.yml) and config/defaults.py (SHIFT_NUM 5, SHUFFLE_GROUP 2, DEVIDE_LENGTH 4,
SIE_COE 3.0, DROP_PATH 0.1, WARMUP_EPOCHS 5, MOMENTUM 0.9); for BoT from
michuanhaohao/reid-strong-baseline configs/softmax_triplet.yml and config/defaults.py (LAST_STRIDE 1,
NECK bnneck, MARGIN 0.3, PIXEL_MEAN/STD ImageNet) with the paper's warmup start (3.5e-5 = 0.1 x
BASE_LR); not from our YAML files.
"""

from typing import NamedTuple

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from reid.config import CONFIG_DIR, register_resolvers
from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig


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


VIT_B, VIT_S = "reid.models.vit.vit_base", "reid.models.vit.vit_small"
PERSON = (256, 128)
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
    "vit_small_lup_market": Official("market1501", VIT_S, 0.0004, 64, PERSON, 16, None, None, warmup=20),
    "vit_small_lup_msmt": Official("msmt17", VIT_S, 0.0004, 64, PERSON, 16, None, None, warmup=20),
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


@pytest.fixture(scope="module")
def composed() -> dict[str, DictConfig]:
    """Every experiment composed once (composition is the slow part)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return {
            name: compose(config_name="run", overrides=[f"experiment={name}"])
            for name in [*OFFICIAL, *OFFICIAL_BOT]
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
    assert model.schedule.warmup_epochs == want.warmup
    assert model.schedule.warmup_start_factor == pytest.approx(0.01)
    assert model.schedule.final_factor == pytest.approx(0.002)
    assert model.loss.triplet_loss.margin is None  # NO_MARGIN: True
    assert model.loss.id_loss.label_smoothing == 0.0  # IF_LABELSMOOTH: off
    assert model.neck_feat == "before"
    assert list(data.pixel_mean) == [0.5, 0.5, 0.5] and list(data.pixel_std) == [0.5, 0.5, 0.5]
    if want.sie is None:
        assert model.sie is None
    else:
        assert (model.sie.camera, model.sie.view) == want.sie
        assert model.sie.coefficient == pytest.approx(3.0)
    if want.jpm_shift is None:
        assert model.jpm is None
    else:
        assert (model.jpm.shift, model.jpm.groups, model.jpm.num_local) == (want.jpm_shift, 2, 4)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_experiment_instantiates_with_a_tiny_backbone(name, composed):
    """Swap in a one-block tiny ViT (same stride, image size, SIE, JPM) and no weights file."""
    model = composed[name].model.copy()
    OmegaConf.set_struct(model, False)
    model.backbone._target_ = "reid.models.vit.vit_tiny"
    model.backbone.depth = 1
    model.weights = None
    info = DatasetInfo(num_classes=6, num_cameras=3, num_views=2)
    task = instantiate(model, data_info=info, evaluation=EvalConfig(), _recursive_=False)
    want = OFFICIAL[name]
    rows, cols = task.net.backbone.grid_size
    assert (rows, cols) == ((want.size[0] - 16) // want.stride + 1, (want.size[1] - 16) // want.stride + 1)
    num_local = 0 if want.jpm_shift is None else 4
    assert task.net.embedding_dim == 192 * (1 + num_local)
    sie = getattr(task.net.backbone, "sie_embed", None)
    if want.sie is None:
        assert sie is None
    else:
        assert sie.shape[0] == (3 if want.sie[0] else 1) * (2 if want.sie[1] else 1)
    assert isinstance(task.objective, torch.nn.Module)


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
    assert model.schedule._target_ == "reid.optim.warmup_multistep_schedule"
    assert model.schedule.warmup_epochs == want.warmup
    assert model.schedule.warmup_start_factor == pytest.approx(want.warmup_start)
    assert tuple(model.schedule.milestones) == want.milestones
    assert model.schedule.gamma == pytest.approx(want.gamma)
    assert cfg.trainer.max_epochs == want.epochs
    assert model.loss.id_loss.label_smoothing == pytest.approx(want.label_smoothing)
    assert model.loss.triplet_loss.margin == pytest.approx(want.margin)
    assert not model.loss.triplet_loss.normalize_feature
    assert model.loss.id_weight == model.loss.triplet_weight == 1.0
    assert data.batch_size == want.batch and data.num_instances == want.instances
    assert list(data.image_size) == list(want.size)
    assert data.augment.erasing_prob == pytest.approx(want.erasing)
    assert data.augment.padding == want.padding
    assert data.augment.flip_prob == pytest.approx(want.flip)
    assert list(data.pixel_mean) == pytest.approx([0.485, 0.456, 0.406])
    assert list(data.pixel_std) == pytest.approx([0.229, 0.224, 0.225])


@pytest.mark.parametrize("name", sorted(OFFICIAL_BOT))
def test_bot_experiment_instantiates_with_a_tiny_backbone(name, composed):
    """Swap in the tiny ResNet (same last stride) and no weights file: a CNNReIDNet with one branch."""
    model = composed[name].model.copy()
    OmegaConf.set_struct(model, False)
    model.backbone._target_ = "reid.models.resnet.resnet_tiny"
    model.weights = None
    task = instantiate(
        model,
        data_info=DatasetInfo(num_classes=6, num_cameras=3, num_views=1),
        evaluation=EvalConfig(),
        _recursive_=False,
    )
    assert type(task.net).__name__ == "CNNReIDNet"
    assert task.net.embedding_dim == 128 and task.net.branch_weights == (1.0,)
    size = OFFICIAL_BOT[name].size
    with torch.device("meta"):  # shapes only
        feature_map = task.net.backbone.to("meta").forward_features(torch.empty(1, 3, *size))
    assert tuple(feature_map.shape[2:]) == (size[0] // 16, size[1] // 16)  # last stride 1: output stride 16
