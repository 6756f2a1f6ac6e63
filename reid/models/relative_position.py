"""Relative position bias for ViT self-attention (BEiT Sec. 2.2 / Swin Sec. 3.2, over the whole patch grid).

Every head ``h`` of a layer adds a learned bias to its attention logits:

    Attn(Q, K, V) = softmax(Q K^T / sqrt(d) + B) V,     B[h, i, j] = table[index[i, j], h]

For patches ``i = (y1, x1)`` and ``j = (y2, x2)`` of an ``H x W`` grid (row-major) the entry depends only on
the offset: ``index[i, j] = (y1 - y2 + H - 1) * (2W - 1) + (x1 - x2 + W - 1)``, one of
``R = (2H - 1)(2W - 1)`` entries (21 x 10 patches at 256 x 128, stride 12: R = 41 * 19 = 779).

Prefix tokens ([CLS], PASS part tokens) have no place on the grid. With ``P`` of them, ordered first
(``[prefix_0 .. prefix_{P-1}; patches]``), each gets its own learned entries, one per direction:

    prefix i -> any patch   R + i                 (query i, key a patch)
    any patch -> prefix j   R + P + j
    prefix i -> prefix j    R + 2P + i * P + j

``num_relative_entries = R + 2P + P^2``. For ``P = 1`` these are exactly BEiT's three extra entries
(timm ``beit.gen_relative_position_index``: cls->token ``R``, token->cls ``R + 1``, cls->cls ``R + 2``).
Why one entry per prefix token and direction instead of BEiT's single shared triple: PASS part tokens
specialise on different body regions (PASS Sec. 3.2), so each may learn its own attention prior towards
the patches, and patches their own towards each part; a query's bias towards a token and that token's
towards the query differ (the matrix is not symmetric, as for the patch offsets). The cost is
``2P + P^2`` scalars per head.

The table is zero-initialised (BEiT ``nn.init.zeros_``), so a model with it computes exactly what the
plain ViT computes until the table is trained: a checkpoint without tables (ImageNet, LUPerson, PASS)
starts as the plain model. When the grid changes (another input size or stride, or DINO local crops)
the ``(2H-1) x (2W-1)`` part is resized bicubically per head (``align_corners=False``, as Swin's
``load_pretrained``; BEiT's official fine-tuning uses scipy cubic on a geometric grid instead) and the
prefix entries are kept.

Key: ``table`` [entries, heads]; the index is a non-persistent buffer (rebuilt from the grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Grid = tuple[int, int]


@dataclass(frozen=True)
class RelPosBiasConfig:
    """``shared``: one table for all layers (BEiT ``use_shared_rel_pos_bias``); else one per layer."""

    shared: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.shared, bool):
            raise TypeError(f"rel_pos_bias.shared: expected true or false, got {self.shared!r}")


def _check_grid(grid: Grid, num_prefix: int) -> tuple[int, int]:
    rows, cols = (int(v) for v in grid)
    if rows < 1 or cols < 1 or num_prefix < 0:
        raise ValueError(
            f"relative position: grid must be positive and num_prefix >= 0, got grid {tuple(grid)}, "
            f"num_prefix {num_prefix}"
        )
    return rows, cols


def num_relative_entries(grid: Grid, num_prefix: int = 1) -> int:
    """Table rows: ``R = (2H-1)(2W-1)`` offsets, ``2P`` prefix<->patch entries, ``P^2`` prefix<->prefix."""
    rows, cols = _check_grid(grid, num_prefix)
    return (2 * rows - 1) * (2 * cols - 1) + 2 * num_prefix + num_prefix * num_prefix


def relative_position_index(grid: Grid, num_prefix: int = 1, device: torch.device | None = None) -> Tensor:
    """Index ``[T, T]`` (int64, T = P + H*W) of the table entry each (query, key) pair reads."""
    rows, cols = _check_grid(grid, num_prefix)
    ys, xs = torch.meshgrid(
        torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij"
    )
    ys, xs = ys.flatten(), xs.flatten()
    patch = (ys[:, None] - ys[None, :] + rows - 1) * (2 * cols - 1) + (xs[:, None] - xs[None, :] + cols - 1)
    offsets = (2 * rows - 1) * (2 * cols - 1)
    p = num_prefix
    prefix = torch.arange(p, device=device)
    index = torch.empty(p + rows * cols, p + rows * cols, dtype=torch.long, device=device)
    index[p:, p:] = patch
    index[:p, p:] = (offsets + prefix)[:, None]
    index[p:, :p] = (offsets + p + prefix)[None, :]
    index[:p, :p] = offsets + 2 * p + prefix[:, None] * p + prefix[None, :]
    return index


def resize_relative_table(table: Tensor, old_grid: Grid, new_grid: Grid, num_prefix: int = 1) -> Tensor:
    """``[entries(old_grid), heads]`` -> ``[entries(new_grid), heads]``: the offset part resized bicubically
    per head as a ``(2H-1) x (2W-1)`` image (``align_corners=False``), the prefix entries copied."""
    old_rows, old_cols = _check_grid(old_grid, num_prefix)
    new_rows, new_cols = _check_grid(new_grid, num_prefix)
    expected = num_relative_entries(old_grid, num_prefix)
    if table.ndim != 2 or table.shape[0] != expected:
        raise ValueError(
            f"relative position: a table for a {old_rows}x{old_cols} grid with {num_prefix} prefix tokens "
            f"has {expected} rows [entries, heads], got shape {tuple(table.shape)}"
        )
    if (old_rows, old_cols) == (new_rows, new_cols):
        return table.clone()
    offsets = (2 * old_rows - 1) * (2 * old_cols - 1)
    heads = table.shape[1]
    image = table[:offsets].t().reshape(1, heads, 2 * old_rows - 1, 2 * old_cols - 1)
    # float32: bicubic resize of half-precision tensors is not supported on every device
    resized = F.interpolate(
        image.float(), size=(2 * new_rows - 1, 2 * new_cols - 1), mode="bicubic", align_corners=False
    )
    return torch.cat([resized.reshape(heads, -1).t().to(table.dtype), table[offsets:]], dim=0)


def attention_mask(bias: Tensor, like: Tensor) -> Tensor:
    """``bias`` in the dtype attention computes in for the input ``like``: the autocast dtype when autocast
    is on for its device (``F.scaled_dot_product_attention`` refuses a float32 mask with bf16 queries),
    else ``like``'s dtype."""
    device = like.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else like.dtype
    return bias.to(dtype)


def run_block(block: nn.Module, tokens: Tensor, bias: Tensor | None) -> Tensor:
    """A timm ``Block`` with ``bias`` (``[heads, T, T]`` or ``[B, heads, T, T]``) as its additive attention
    mask (timm passes it to ``F.scaled_dot_product_attention``), cast to the attention's compute dtype;
    without a bias the block runs exactly as before."""
    return block(tokens) if bias is None else block(tokens, attn_mask=attention_mask(bias, tokens))


class RelativePositionBias(nn.Module):
    """A learned, zero-initialised table ``[entries, heads]`` and the attention bias it gives.

    ``forward(positions, grid)`` is the bias ``[heads, T, T]`` of the natural token order on ``grid``
    (default: the grid the table is learned for; another grid resizes the table on the fly), or, given
    ``positions`` (int64 ``[T']`` or ``[S, T']``: each token's index in the natural order), the bias of that
    reordered or partial sequence, ``[heads, T', T']`` or ``[S, heads, T', T']``.
    """

    index: Tensor  # buffer [T, T] into ``table``, of the natural token order on ``grid``

    def __init__(self, grid: Grid, num_heads: int, num_prefix: int = 1) -> None:
        super().__init__()
        rows, cols = _check_grid(grid, num_prefix)
        if num_heads < 1:
            raise ValueError(f"RelativePositionBias: num_heads must be >= 1, got {num_heads}")
        self.grid = (rows, cols)
        self.num_prefix = num_prefix
        self.table = nn.Parameter(torch.zeros(num_relative_entries(self.grid, num_prefix), num_heads))
        self.register_buffer("index", relative_position_index(self.grid, num_prefix), persistent=False)
        self._other_grids: dict[tuple[Grid, torch.device], Tensor] = {}

    def _table_and_index(self, grid: Grid | None) -> tuple[Tensor, Tensor]:
        grid = self.grid if grid is None else (int(grid[0]), int(grid[1]))
        if grid == self.grid:
            return self.table, self.index
        key = (grid, self.index.device)
        if key not in self._other_grids:
            self._other_grids[key] = relative_position_index(grid, self.num_prefix, self.index.device)
        return resize_relative_table(self.table, self.grid, grid, self.num_prefix), self._other_grids[key]

    def forward(self, positions: Tensor | None = None, grid: Grid | None = None) -> Tensor:
        table, index = self._table_and_index(grid)
        if positions is not None:
            if positions.dtype != torch.long or positions.ndim not in (1, 2):
                raise ValueError(
                    "RelativePositionBias: positions must be int64 [T'] or [S, T'], got "
                    f"{positions.dtype} {tuple(positions.shape)}"
                )
            index = index[positions[..., :, None], positions[..., None, :]]
        bias = table[index]  # [..., T', T', heads]
        return bias.movedim(bias.ndim - 1, bias.ndim - 3).contiguous()  # ONNX export mis-traces negative dims

    def patch_bias(self, grid: Grid | None = None) -> Tensor:
        """The patch-to-patch part ``[heads, N, N]`` (patches row-major)."""
        table, index = self._table_and_index(grid)
        p = self.num_prefix
        return table[index[p:, p:]].permute(2, 0, 1)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, num_heads={self.table.shape[1]}, num_prefix={self.num_prefix}"


__all__ = [
    "RelPosBiasConfig", "RelativePositionBias", "attention_mask",
    "num_relative_entries", "relative_position_index", "resize_relative_table", "run_block",
]  # fmt: skip
