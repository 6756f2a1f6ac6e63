"""Patch embeddings: overlapping patchify conv (TransReID) and the IBN convolution stem (TransReID-SSL).

``OverlapPatchEmbed`` (TransReID Sec. 3.1, "overlapping patches"): a ``P x P`` conv with stride ``S <= P``
and no padding, so an ``H x W`` image gives ``N = ((H - P) // S + 1) * ((W - P) // S + 1)`` tokens
(21 x 10 = 210 at 256 x 128, P 16, S 12).

``stem="ics"`` (TransReID-SSL Sec. 3.3, "IBN-based convolution stem"): before the patchify conv, three
convs (7x7 stride 2, 3x3, 3x3; 64 channels) with IBN (half InstanceNorm, half BatchNorm) after the first two
and BatchNorm after the last. The patchify conv then works on the half-resolution map with kernel ``P/2``
and stride ``S/2``, which gives exactly the same token grid as the plain stem at stride ``S`` (the official
code supports only ``S = P``; the halving rule extends it to any even stride).

``input_norm=True`` (ours, off by default): every image is first standardised per channel over its own
pixels, ``x_c <- (x_c - mean(x_c)) / std(x_c)`` (InstanceNorm without affine, no parameters), which
removes a camera's colour cast, exposure and contrast before any learned layer: the style-normalisation
idea of IBN-Net and SNR applied to the input. The scalar buffer ``input_norm_flag`` exists only so
that a state dict records the option: weights trained on standardised input are refused by a model
that feeds raw pixels, and the other way round (:func:`reid.models.weights.load_pretrained`, and
strict loading when resuming).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid.models.ibn import IBN
from reid.models.position import grid_size

StemKind = Literal["patch", "ics"]
INPUT_NORM_FLAG = "input_norm_flag"
"""Name of the buffer present exactly when ``input_norm`` is on."""


def ics_stem(in_chans: int, hidden_dim: int = 64) -> nn.Sequential:
    """The TransReID-SSL IBN convolution stem; halves the spatial resolution."""
    return nn.Sequential(
        nn.Conv2d(in_chans, hidden_dim, kernel_size=7, stride=2, padding=3, bias=False),
        IBN(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, stride=1, padding=1, bias=False),
        IBN(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(hidden_dim),
        nn.ReLU(inplace=True),
    )


class OverlapPatchEmbed(nn.Module):
    """Image ``[B, C, H, W]`` -> patch tokens ``[B, N, D]`` in row-major grid order; ``grid_size`` and
    ``num_patches`` are those of ``img_size``, the size the position embeddings are learned for.

    ``stride=None`` means non-overlapping patches (stride = patch size). Keys: ``proj.{weight,bias}`` and,
    with ``stem="ics"``, ``stem.*``.
    """

    def __init__(
        self,
        img_size: tuple[int, int] = (256, 128),
        patch_size: int = 16,
        stride: int | None = None,
        in_chans: int = 3,
        embed_dim: int = 768,
        stem: StemKind = "patch",
        input_norm: bool = False,
        stem_dim: int = 64,
    ) -> None:
        super().__init__()
        stride = patch_size if stride is None else stride
        if not 0 < stride <= patch_size:
            raise ValueError(f"OverlapPatchEmbed: stride must be in [1, {patch_size}], got {stride}")
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.patch_size = patch_size
        self.stride = stride
        self.grid_size = grid_size(self.img_size, patch_size, stride)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.stem_kind = stem
        self.input_norm = input_norm
        if input_norm:
            self.register_buffer(INPUT_NORM_FLAG, torch.ones(()))
        if stem == "patch":
            self.stem: nn.Module = nn.Identity()
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)
        elif stem == "ics":
            if patch_size % 2 or stride % 2:
                raise ValueError(
                    f"OverlapPatchEmbed: stem='ics' halves the image, so patch_size ({patch_size}) and "
                    f"stride ({stride}) must be even"
                )
            if stem_dim < 1:
                raise ValueError(f"OverlapPatchEmbed: stem_dim must be >= 1, got {stem_dim}")
            self.stem = ics_stem(in_chans, stem_dim)
            self.proj = nn.Conv2d(stem_dim, embed_dim, kernel_size=patch_size // 2, stride=stride // 2)
        else:
            raise ValueError(f"OverlapPatchEmbed: stem must be 'patch' or 'ics', got {stem!r}")
        self._init_weights()

    def _init_weights(self) -> None:
        # official PatchEmbed_overlap: conv weights ~ N(0, 2 / (k*k*out_channels)); norms start at identity
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d | nn.InstanceNorm2d) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def feature_map(self, x: Tensor) -> Tensor:
        """Patch features as a grid ``[B, D, rows, cols]``. Any input of at least one patch is accepted
        (DINO local crops are smaller than the model's ``img_size``); the grid follows the input."""
        if x.ndim != 4 or x.shape[-2] < self.patch_size or x.shape[-1] < self.patch_size:
            raise ValueError(
                f"OverlapPatchEmbed: expected images [B, C, H, W] with H, W >= patch_size {self.patch_size}, "
                f"got shape {tuple(x.shape)}"
            )
        if self.input_norm:
            x = F.instance_norm(x)
        return self.proj(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_map(x).flatten(2).transpose(1, 2)
