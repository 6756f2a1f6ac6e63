"""Resizing a patch position-embedding grid to a new patch grid.

TransReID (Sec. 4.1) fine-tunes ImageNet ViTs (a 14 x 14 grid at 224 x 224) on 256 x 128 person crops with
overlapping patches (a 21 x 10 grid at stride 12). The learned embeddings of the old grid are treated as an
image with D channels and resized by bilinear interpolation (``align_corners=False``, as ``F.interpolate``
in the official ``resize_pos_embed``). Only patch positions are resized here: class/part-token positions
have no place on the grid and are carried over unchanged by the caller.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def infer_square_grid(num_patches: int) -> tuple[int, int]:
    """The (rows, cols) of a square grid holding ``num_patches`` positions (ImageNet checkpoints)."""
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(
            f"reid.models.position: cannot infer a square grid from {num_patches} patch positions; "
            "pass old_grid=(rows, cols) explicitly"
        )
    return side, side


def resize_pos_embed(
    pos_embed: Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int] | None = None
) -> Tensor:
    """Resize patch position embeddings ``[1, H0*W0, D]`` (row-major grid) to ``[1, H1*W1, D]``.

    The grid is unchanged -> the values are returned unchanged (a copy). Otherwise the grid is
    bilinearly interpolated. ``old_grid`` defaults to the square grid implied by the token count.
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(
            "reid.models.position: pos_embed must have shape [1, num_patches, dim], "
            f"got {tuple(pos_embed.shape)}"
        )
    old_rows, old_cols = old_grid if old_grid is not None else infer_square_grid(pos_embed.shape[1])
    if old_rows * old_cols != pos_embed.shape[1]:
        raise ValueError(
            f"reid.models.position: old_grid {old_rows}x{old_cols} does not hold "
            f"{pos_embed.shape[1]} positions"
        )
    new_rows, new_cols = new_grid
    if (old_rows, old_cols) == (new_rows, new_cols):
        return pos_embed.clone()
    dim = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, old_rows, old_cols, dim).permute(0, 3, 1, 2)
    # interpolate in float32: bilinear resize of half-precision tensors is not supported on every device
    resized = F.interpolate(grid.float(), size=(new_rows, new_cols), mode="bilinear", align_corners=False)
    return resized.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, new_rows * new_cols, dim)


def grid_size(img_size: tuple[int, int], patch_size: int, stride: int) -> tuple[int, int]:
    """Rows and columns of patches of a ``patch_size`` conv with ``stride`` and no padding (official
    ``PatchEmbed_overlap``: ``(H - P) // S + 1``)."""
    height, width = img_size
    if height < patch_size or width < patch_size:
        raise ValueError(
            f"reid.models.position: image size {img_size} is smaller than patch size {patch_size}"
        )
    return (height - patch_size) // stride + 1, (width - patch_size) // stride + 1


__all__ = ["grid_size", "infer_square_grid", "resize_pos_embed"]
