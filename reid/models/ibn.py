"""Instance-batch normalisation, IBN-a (Pan et al., "Two at Once: Enhancing Learning and Generalization
Capacities via IBN-Net", ECCV 2018, Sec. 3.2; official XingangPan/IBN-Net ``ibnnet/modules.py`` and
``ibnnet/resnet_ibn.py``, as fast-reid's ``resnet50_ibn_a`` uses them).

IN removes appearance (colour, style, illumination) from a feature map, BN keeps the content that
discriminates; IBN-a puts both into the first normalisation of a residual block. For a map ``x`` with
``C`` channels and ``h = int(C * ratio)`` (ratio 0.5):

    IBN(x) = concat( IN(x[:, :h]), BN(x[:, h:]) )      along the channels

IN is ``InstanceNorm2d(h, affine=True)`` (no running statistics), BN is ``BatchNorm2d(C - h)``. IBN-a
ResNets replace ``bn1`` of every residual block of stages 1-3 by it; stage 4 and the stem keep BN
(IN there would remove the discriminative information the last layers need: the paper's Sec. 3.2).
The submodules are named ``IN`` and ``BN`` as in the official checkpoints
(``layer1.0.bn1.IN.weight``, ``layer1.0.bn1.BN.running_mean``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

IBN_A_STAGES = (1, 2, 3)
Net = TypeVar("Net", bound=nn.Module)


class IBN(nn.Module):
    """``concat(IN(x[:, :h]), BN(x[:, h:]))`` with ``h = int(planes * ratio)`` (module docstring)."""

    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        half = int(planes * ratio)
        if not 0 < half < planes:
            raise ValueError(
                f"IBN: ratio={ratio} of {planes} channels leaves {half} for InstanceNorm; need at least one "
                "channel for each of InstanceNorm and BatchNorm"
            )
        self.instance_channels = half
        self.IN = nn.InstanceNorm2d(half, affine=True)
        self.BN = nn.BatchNorm2d(planes - half)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, planes, H, W]`` -> same shape."""
        instance, batch = torch.split(x, [self.instance_channels, x.shape[1] - self.instance_channels], dim=1)
        return torch.cat((self.IN(instance.contiguous()), self.BN(batch.contiguous())), dim=1)


def with_ibn_a(resnet: Net, stages: Sequence[int] = IBN_A_STAGES, ratio: float = 0.5) -> Net:
    """Turn a ResNet (``layer1``..``layer4`` of blocks with a ``bn1``) into its IBN-a variant in place:
    ``bn1`` of every block of ``stages`` becomes :class:`IBN` over the same channels (official
    ``ResNet_IBN(ibn_cfg=('a', 'a', 'a', None))``: every block of layers 1-3, the downsampling first block
    included). The new norms start as the official ones do (weights 1, biases 0). Returns ``resnet``."""
    for stage in stages:
        for block in getattr(resnet, f"layer{stage}"):
            if not isinstance(block.bn1, nn.BatchNorm2d):
                raise TypeError(
                    f"with_ibn_a: layer{stage} block bn1 is a {type(block.bn1).__name__}, expected the "
                    "BatchNorm2d of a plain ResNet block"
                )
            block.bn1 = IBN(block.bn1.num_features, ratio)
    return resnet
