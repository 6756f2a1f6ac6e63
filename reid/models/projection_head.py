"""DINO projection head (Caron et al., ICCV 2021, Sec. 3.1 and App. C; official ``DINOHead``).

    h = MLP(x)  (Linear-GELU-Linear-GELU-Linear: in -> hidden -> hidden -> bottleneck 256)
    z = h / ||h||_2
    g(x) = W z,   W_k = g_k v_k / ||v_k||_2   (weight-normalised last layer, no bias)

With ``norm_last_layer`` the magnitudes g_k are fixed to 1 (not trained), so every output unit is a
cosine similarity; this stabilises training (DINO recommends it for ViT-B, PASS uses it).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor, nn


class WeightNormLinear(nn.Module):
    """Bias-free linear layer W = g * v / ||v|| (row-wise), keys ``weight_g`` [out, 1], ``weight_v`` [out, in]
    (the names of ``torch.nn.utils.weight_norm``, so official DINO/PASS head weights load unchanged)."""

    def __init__(self, in_dim: int, out_dim: int, train_gain: bool) -> None:
        super().__init__()
        reference = nn.Linear(in_dim, out_dim, bias=False)  # default init of v, as in the official head
        self.weight_v = nn.Parameter(reference.weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=train_gain)

    @property
    def weight(self) -> Tensor:
        return self.weight_g * F.normalize(self.weight_v, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """Projection head (module docstring): ``[..., in_dim] -> [..., out_dim]``.

    Args:
        in_dim: backbone feature size.
        out_dim: number of prototypes K (65,536 in DINO / TransReID-SSL / PASS).
        hidden_dim, bottleneck_dim: MLP widths (2048, 256).
        num_layers: MLP depth (3); 1 means a single Linear to the bottleneck.
        norm_last_layer: fix the last layer's weight-norm gains to 1.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"DINOHead: num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(a, b))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, train_gain=not norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))
