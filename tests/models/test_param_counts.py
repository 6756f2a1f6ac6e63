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
"""

from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from reid.models.jpm import JPMConfig
from reid.models.reid_net import ReIDNet
from reid.models.vit import vit_base, vit_small

OFFICIAL_TRANSREID_JPM_SIE = 103_653_352
OFFICIAL_VIT_BASE_BASELINE = 87_156_712
OFFICIAL_PASS_VIT_SMALL = 22_606_696


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
            stride=12, drop_path_rate=0.1, camera_embed={"num_cameras": 6, "coefficient": 3.0}
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
