"""Global pooling of a CNN feature map ``[B, C, H, W] -> [B, C]``.

Average pooling is the BoT choice (Luo et al., CVPRW 2019: ResNet-50 -> GAP -> BNNeck). Generalized
mean (GeM) pooling (Radenović, Tolias, Chum, "Fine-tuning CNN Image Retrieval with No Human
Annotation", TPAMI 2018), used for re-id by AGW (Ye et al., TPAMI 2021) and fast-reid, is
per channel ``k`` over the ``|X_k| = H W`` positions

    f_k = ( (1 / |X_k|) sum_{x in X_k} x^p )^(1 / p)

with ``p = 1`` average pooling and ``p -> inf`` max pooling; ``p`` is learned by default (init 3).
Choose one in the net config by ``_target_`` (``conf/model/bot_r50.yaml``: ``net.pool``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GlobalAvgPool(nn.Module):
    """``[B, C, H, W] -> [B, C]``: the mean over positions."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class GeneralizedMeanPool(nn.Module):
    """GeM pooling ``[B, C, H, W] -> [B, C]`` (equation in the module docstring).

    Inputs are clamped at ``eps`` first (the power of a negative value is undefined; after a ReLU
    only exact zeros are touched). One ``p`` is shared by all channels, a parameter when
    ``learnable`` (key ``p``), otherwise a buffer.
    """

    def __init__(self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeneralizedMeanPool: p must be positive, got {p}")
        initial = torch.full((1,), float(p))
        if learnable:
            self.p = nn.Parameter(initial)
        else:
            self.register_buffer("p", initial)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()):.4g}, learnable={isinstance(self.p, nn.Parameter)}, eps={self.eps}"
