"""Patch position grids: their size, the grid a checkpoint was trained on, and resizing one to another.

TransReID (Sec. 4.1) fine-tunes ImageNet ViTs (a 14 x 14 grid at 224 x 224) on 256 x 128 person crops with
overlapping patches (a 21 x 10 grid at stride 12). The learned embeddings of the old grid are treated as an
image with D channels and resized by bilinear interpolation (``align_corners=False``, as ``F.interpolate``
in the official ``resize_pos_embed``). Only patch positions are resized here: class/part-token positions
have no place on the grid and are carried over unchanged by the caller.

A resize needs the checkpoint's grid, and a count of positions alone does not always give it (210 is
21 x 10, but also 30 x 7). Our ViTs record their grid in the state dict (the ``pos_grid`` buffer,
:data:`POS_GRID`); for a checkpoint without that record, :func:`candidate_grids` lists the grids that
the known ways of making a checkpoint produce, and the loader (``reid.models.weights``) accepts an
inference only when exactly one remains.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Protocol

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


POS_GRID = "pos_grid"
"""Name of the ViT buffer (int64 ``[rows, cols]``) recording the grid its ``pos_embed`` is laid out on."""

OFFICIAL_IMAGE_SIZES: tuple[tuple[int, int], ...] = ((256, 128), (384, 128), (256, 256), (224, 224))
"""Input sizes of the official TransReID / TransReID-SSL / PASS configs, and ImageNet's 224 x 224."""
OFFICIAL_STRIDES: tuple[int, ...] = (16, 12, 11)
"""Patch strides of the official configs (``STRIDE_SIZE``; 11 in the Occluded-Duke ones), patch 16."""


def _aspect_sizes(
    img_size: tuple[int, int], patch_size: int, max_stride: int, num_patches: int
) -> Iterator[tuple[int, int]]:
    """Image sizes ``k * (a, b)`` with the reduced aspect ratio ``a : b`` of ``img_size``, smallest
    first, while the coarsest grid (``max_stride``) still holds at most ``num_patches`` positions."""
    gcd = math.gcd(*img_size)
    unit_h, unit_w = img_size[0] // gcd, img_size[1] // gcd
    scale = math.ceil(patch_size / min(unit_h, unit_w))
    while True:
        size = (unit_h * scale, unit_w * scale)
        rows, cols = grid_size(size, patch_size, max_stride)
        if rows * cols > num_patches:
            return
        yield size
        scale += 1


def candidate_grids(
    num_patches: int, img_size: Sequence[int], patch_size: int, stride: int
) -> dict[tuple[int, int], str]:
    """The patch grids a checkpoint with ``num_patches`` positions can come from, each with how.

    Three known ways of making a checkpoint, for a model of ``img_size`` / ``patch_size`` / ``stride``:

    1. an official config: :data:`OFFICIAL_IMAGE_SIZES` x :data:`OFFICIAL_STRIDES` at patch 16
       (21 x 10 is 256 x 128 at stride 12; 16 x 8 the LUPerson 256 x 128 checkpoints);
    2. a square grid (ImageNet at any resolution: 14 x 14 at 224, 24 x 24 at 384);
    3. the model's own aspect ratio at another scale, at an official stride or the model's
       (e.g. pretraining at 64 x 32 and fine-tuning at 128 x 64).

    Bare factorisations are never candidates: 30 x 7 holds 210 positions but no such checkpoint exists.
    """
    height, width = int(img_size[0]), int(img_size[1])
    strides = sorted({s for s in (*OFFICIAL_STRIDES, stride) if 0 < s <= patch_size}, reverse=True)
    found: dict[tuple[int, int], str] = {}
    if patch_size == 16:
        for size in OFFICIAL_IMAGE_SIZES:
            for s in OFFICIAL_STRIDES:
                rows, cols = grid_size(size, 16, s)
                if rows * cols == num_patches:
                    found.setdefault((rows, cols), f"{size[0]}x{size[1]} at stride {s}")
    side = math.isqrt(num_patches)
    if side * side == num_patches:
        found.setdefault((side, side), "a square grid (ImageNet)")
    for size in _aspect_sizes((height, width), patch_size, strides[0], num_patches):
        for s in strides:
            rows, cols = grid_size(size, patch_size, s)
            if rows * cols == num_patches:
                found.setdefault(
                    (rows, cols), f"{size[0]}x{size[1]} at stride {s} (the model's aspect ratio)"
                )
    return found


class PatchGrid(Protocol):
    """What the grid decision reads of a model's patch embedding (``OverlapPatchEmbed``)."""

    img_size: tuple[int, int]
    patch_size: int
    stride: int
    grid_size: tuple[int, int]


def infer_old_grid(num_patches: int, target: PatchGrid, source: str = "checkpoint") -> tuple[int, int]:
    """Grid of a checkpoint's ``num_patches`` positions without a record, for a model with the patch
    embedding ``target``: its own grid when the counts are equal, else the single candidate of
    :func:`candidate_grids`; several or none are a ``ValueError`` naming ``model.weights_grid``."""
    if target.grid_size[0] * target.grid_size[1] == num_patches:
        return (int(target.grid_size[0]), int(target.grid_size[1]))
    img_size, patch, stride = target.img_size, target.patch_size, target.stride
    found = candidate_grids(num_patches, img_size, patch, stride)
    if len(found) == 1:
        return next(iter(found))
    listed = "; ".join(f"{r}x{c} ({how})" for (r, c), how in found.items()) or "none"
    raise ValueError(
        f"weights: {source} has {num_patches} patch positions and no recorded grid; for a "
        f"{img_size[0]}x{img_size[1]} model (patch {patch}, stride {stride}) the known grids holding "
        f"{num_patches} are: {listed}. Set model.weights_grid=[rows,cols] to the grid the checkpoint "
        "was trained on (e.g. [16,8] for a 256x128 stride-16 LUPerson checkpoint)"
    )


def _explicit_grid(old_grid: Sequence[int] | None, count: int, source: str) -> tuple[int, int] | None:
    if old_grid is None:
        return None
    values = list(old_grid)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(
            f"weights: model.weights_grid must be [rows, cols] (positive ints), got {old_grid!r}"
        )
    if values[0] * values[1] != count:
        raise ValueError(
            f"weights: model.weights_grid={values} holds {values[0] * values[1]} positions, but {source} "
            f"has {count}; set it to the checkpoint's [rows, cols] (rows x cols = {count}) or null"
        )
    return values[0], values[1]


def _recorded_grid(record: Tensor | None, count: int, source: str) -> tuple[int, int] | None:
    if record is None:
        return None
    grid = tuple(int(v) for v in record.reshape(-1).tolist())
    if len(grid) != 2 or grid[0] * grid[1] != count:
        raise ValueError(
            f"weights: {source} records {POS_GRID}={list(grid)}, which does not hold {count} positions"
        )
    return grid


def checkpoint_grid(
    count: int, record: Tensor | None, old_grid: Sequence[int] | None, target: PatchGrid, source: str
) -> tuple[int, int]:
    """The grid of a checkpoint's ``count`` patch positions: its ``pos_grid`` ``record``, else the
    explicit ``old_grid`` (``model.weights_grid``; when both are given they must agree), else
    :func:`infer_old_grid`. Every error names ``source`` (the file) and ``model.weights_grid``."""
    recorded = _recorded_grid(record, count, source)
    explicit = _explicit_grid(old_grid, count, source)
    if recorded and explicit and recorded != explicit:
        raise ValueError(
            f"weights: model.weights_grid={list(explicit)} contradicts the grid "
            f"{recorded[0]}x{recorded[1]} recorded in {source}; set model.weights_grid=null"
        )
    return recorded or explicit or infer_old_grid(count, target, source)


__all__ = [
    "OFFICIAL_IMAGE_SIZES", "OFFICIAL_STRIDES", "POS_GRID", "PatchGrid", "candidate_grids",
    "checkpoint_grid", "grid_size", "infer_old_grid", "infer_square_grid", "resize_pos_embed",
]  # fmt: skip
