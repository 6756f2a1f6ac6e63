"""Parameter counts against the official TransReID and PASS models (built on the meta device: no memory,
no forward pass).

What the official models count, read from heshuting555/TransReID model/make_model.py and
model/backbones/vit_pytorch.py (and PASS-reID PASS_transreid/model/...):
- the backbone ``TransReID(num_classes=1000)`` always holds an ImageNet classifier ``fc = Linear(D, 1000)``
  that ``forward`` never calls;
- ``build_transformer_local`` (JPM) runs ``base`` with ``local_feature=True``, which stops before the last
  block, and uses two deep copies of the last block + norm (``b1`` global, ``b2`` local); so
  ``base.blocks[-1]`` and ``base.norm`` are parameters without a gradient;
- classifiers (bias-free) and BNNeck bottlenecks (weight + bias) are included; SIE is ``[cameras, 1, D]``;
- PASS fine-tuning uses the default ``MULTI_NECK True`` / ``FEAT_FUSION 'cat'``: a bottleneck for [CLS] and
  one per part token, and a ``Linear(2D, num_classes)`` classifier.
Our ReIDNet has none of the dead weights (its global branch is the backbone's own last block + norm), so
our counts equal the official ones minus exactly those unused modules.

The TransReID-SSL headline model (ViT-B/16+ICS, 384x128, Market-1501: damo-cv/TransReID-SSL
transreid_pytorch/configs/market/vit_base_ics_384.yml) is counted from transreid_pytorch/model/backbones/
vit_pytorch.py and model/make_model.py (``build_transformer``, no JPM, no SIE):
- ``PatchEmbed(stem_conv=True)``: ``conv`` = Conv2d(3, 64, 7, s2, no bias) 9,408, IBN(64) 128
  (IN(32, affine) + BN(32)), Conv2d(64, 64, 3, no bias) 36,864, IBN(64) 128, Conv2d(64, 64, 3, no bias)
  36,864, BN(64) 128 = 83,520; ``proj`` = Conv2d(64, 768, 8, s8) 3,146,496;
- ``cls_token`` 768 and ``pos_embed`` (1 + 24 x 8) x 768 = 148,224; 12 blocks x 7,087,872 = 85,054,464;
  ``norm`` 1,536; ``fc`` = Linear(768, 1000) 769,000 (never called: ``forward`` returns ``x[:, 0]``);
- ``bottleneck`` BatchNorm1d(768) 1,536 and ``classifier`` Linear(768, 751, no bias) 576,768;
- ``gem`` (GeneralizedMeanPooling) has no parameters and ``GEM_POOLING`` is off.
Total 89,782,312, of which only ``base.fc`` is unused by any forward pass.
"""

from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from reid.models.jpm import JPMConfig
from reid.models.reid_net import ReIDNet
from reid.models.sie import CameraEmbedConfig
from reid.models.vit import vit_base, vit_small

OFFICIAL_TRANSREID_JPM_SIE = 103_653_352
OFFICIAL_VIT_BASE_BASELINE = 87_156_712
OFFICIAL_PASS_VIT_SMALL = 22_606_696
OFFICIAL_VIT_BASE_ICS_384_MARKET = 89_782_312


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _unused_official(dim: int, num_heads: int, with_last_block: bool) -> int:
    with torch.device("meta"):
        dead = [nn.Linear(dim, 1000)]  # base.fc, the ImageNet head
        if with_last_block:
            dead += [
                Block(dim, num_heads, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6)),
                nn.LayerNorm(dim),
            ]
    return sum(_count(m) for m in dead)


def test_transreid_vit_base_jpm_sie_market():
    with torch.device("meta"):
        backbone = vit_base(
            stride=12, drop_path_rate=0.1, camera_embed=CameraEmbedConfig(num_cameras=6, coefficient=3.0)
        )
        net = ReIDNet(backbone, num_classes=751, jpm=JPMConfig(shift=5, groups=2, num_local=4))
    assert backbone.pos_embed.shape[1] + backbone.cls_pos.shape[1] == 211  # 21 x 10 patches + [CLS]
    assert backbone.sie_embed.shape == (6, 1, 768)
    assert net.embedding_dim == 3840
    assert _count(net) == 95_794_944
    assert _count(net) + _unused_official(768, 12, with_last_block=True) == OFFICIAL_TRANSREID_JPM_SIE


def test_plain_vit_base_baseline_market():
    with torch.device("meta"):
        net = ReIDNet(vit_base(stride=12), num_classes=751)
    assert _count(net) == 86_387_712
    assert _count(net) + _unused_official(768, 12, with_last_block=False) == OFFICIAL_VIT_BASE_BASELINE


def test_pass_vit_small_finetune_market():
    with torch.device("meta"):
        net = ReIDNet(vit_small(stride=16, num_parts=3), num_classes=751, feature="cls_parts")
    assert net.embedding_dim == 768
    assert _count(net) == 22_221_696
    assert _count(net) + _unused_official(384, 6, with_last_block=False) == OFFICIAL_PASS_VIT_SMALL


def _official_ics_reid_model(dim: int, num_heads: int, grid: tuple[int, int], num_classes: int) -> nn.Module:
    """The official ``build_transformer`` with ``STEM_CONV: True``, rebuilt from torch / timm parts under the
    official names (TransReID-SSL vit_pytorch.py ``PatchEmbed``, ``IBN``, ``TransReID``; make_model.py)."""

    def ibn(channels: int) -> nn.Module:  # vit_pytorch.IBN: IN on the first half (affine), BN on the rest
        return nn.ModuleDict(
            {"IN": nn.InstanceNorm2d(channels // 2, affine=True), "BN": nn.BatchNorm2d(channels // 2)}
        )

    conv = nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), ibn(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, bias=False), ibn(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
    )  # fmt: skip
    norm_layer = partial(nn.LayerNorm, eps=1e-6)
    base = nn.Module()
    base.patch_embed = nn.ModuleDict({"conv": conv, "proj": nn.Conv2d(64, dim, 8, stride=8)})
    base.cls_token = nn.Parameter(torch.empty(1, 1, dim))
    base.pos_embed = nn.Parameter(torch.empty(1, 1 + grid[0] * grid[1], dim))
    base.blocks = nn.ModuleList(
        Block(dim, num_heads, qkv_bias=True, norm_layer=norm_layer) for _ in range(12)
    )
    base.norm = norm_layer(dim)
    base.fc = nn.Linear(dim, 1000)
    model = nn.Module()
    model.base = base
    model.bottleneck = nn.BatchNorm1d(dim)
    model.classifier = nn.Linear(dim, num_classes, bias=False)
    return model


def test_transreid_ssl_vit_base_ics_384_market():
    """ViT-B/16+ICS at 384x128 (24 x 8 patches, stride 16), 751 ids: the official count less ``base.fc``."""
    with torch.device("meta"):
        backbone = vit_base(img_size=(384, 128), stride=16, stem="ics", drop_path_rate=0.1)
        net = ReIDNet(backbone, num_classes=751)
        official = _official_ics_reid_model(768, 12, (24, 8), num_classes=751)
    assert backbone.grid_size == (24, 8) and backbone.pos_embed.shape[1] + backbone.cls_pos.shape[1] == 193
    assert _count(official) == OFFICIAL_VIT_BASE_ICS_384_MARKET
    assert _count(official.base.patch_embed) == _count(backbone.patch_embed) == 83_520 + 3_146_496
    assert net.embedding_dim == 768
    assert _count(net) == 89_013_312
    assert _count(net) + _count(official.base.fc) == OFFICIAL_VIT_BASE_ICS_384_MARKET
