"""Jigsaw Patch Module (JPM), TransReID Sec. 3.3.

The tokens entering the last transformer layer, ``Z_{l-1} = [z_cls; z_1 .. z_N]``, are rearranged and
split into ``k`` groups; each group, with the shared [CLS] token prepended, goes through its own copy of
the last layer and norm, and its [CLS] output is a local feature ``f_l^j`` (j = 1..k):

1. shift: the first patches are moved to the end. Official ``shuffle_unit(features, shift, group,
   begin=1)`` slices ``[z_cls; z_1..z_N]`` as ``features[:, shift:] ++ features[:, 1:shift]``, so the patch
   sequence is rotated left by ``shift - 1`` patches: ``z_shift .. z_N, z_1 .. z_{shift-1}`` (1-based).
   We keep these official semantics (shift 5 rotates by 4).
2. patch shuffle with ``G`` groups: the sequence is viewed as ``G`` rows of ``N/G`` and read column-wise,
   i.e. output position ``j * G + g`` takes input position ``g * N/G + j`` (when ``N`` is not divisible
   by ``G`` the official code appends copies of the second-to-last token; so do we).
3. split: ``k`` consecutive chunks of ``N // k`` tokens (leftover tokens are dropped, as in the official
   ``patch_length = N // divide_length``).

Without ``shuffle`` (official ``RE_ARRANGE False``) the patches are split in their original order.

With relative position bias (``relative_position.py``) the bias of a local sequence follows its tokens'
*original* positions: the sequence ``[z_cls; z_{o_1} .. z_{o_m}]`` (``o`` = its chunk of the shuffled
order) reads ``B[h, a, b] = table[index[pos_a, pos_b], h]`` with ``pos = [0, P + o_1, .., P + o_m]`` in the
backbone's natural order (``P`` prefix tokens), so shuffling moves the tokens, not their geometry. The
branch copies the last layer's table (per-layer tables, key ``rel_pos.table``) or reads the backbone's
shared one (passed to ``forward``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from reid.models.relative_position import Grid, RelativePositionBias, attention_mask, run_block


@dataclass(frozen=True)
class JPMConfig:
    """Official defaults: ``SHIFT_NUM 5``, ``SHUFFLE_GROUP 2``, ``DEVIDE_LENGTH 4``, ``RE_ARRANGE True``."""

    shift: int = 5
    groups: int = 2
    num_local: int = 4
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.shift < 1 or self.groups < 1 or self.num_local < 1:
            raise ValueError(
                f"JPMConfig: shift ({self.shift}), groups ({self.groups}) and num_local ({self.num_local}) "
                "must all be >= 1"
            )


def shift_shuffle_order(
    num_patches: int, shift: int, groups: int, device: torch.device | None = None
) -> Tensor:
    """Patch indices (0-based) of the shifted and shuffled sequence (length rounded up to a multiple of G)."""
    if not 1 <= shift <= num_patches:
        raise ValueError(f"JPM: shift must be in [1, {num_patches}] for {num_patches} patches, got {shift}")
    order = torch.arange(num_patches, device=device).roll(-(shift - 1), dims=0)  # dims: ONNX export needs it
    padding = -num_patches % groups
    if padding:
        order = torch.cat([order, order[-2:-1].expand(padding)])
    return order.view(groups, -1).t().reshape(-1)


class JigsawPatchModule(nn.Module):
    """k local branches sharing one copy of the backbone's last block and norm (official ``b2``).

    ``forward(tokens, num_prefix, grid, shared_rel_pos)`` takes the tokens before the last block
    ``[B, P + N, D]`` (``P`` prefix tokens: [CLS] then part tokens, which JPM ignores) and returns the ``k``
    local features ``[B, D]``. ``rel_pos``: the backbone's last-layer table to copy (per-layer relative
    position bias); ``None`` without one or when the backbone's shared table is passed to ``forward``.
    Keys: ``block.*``, ``norm.*``, ``rel_pos.table`` (with a copied table).
    """

    def __init__(
        self,
        last_block: nn.Module,
        norm: nn.Module,
        config: JPMConfig,
        rel_pos: RelativePositionBias | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.block = copy.deepcopy(last_block)
        self.norm = copy.deepcopy(norm)
        self.rel_pos = copy.deepcopy(rel_pos) if rel_pos is not None else None

    def load_from_backbone(
        self, last_block: nn.Module, norm: nn.Module, rel_pos: RelativePositionBias | None = None
    ) -> None:
        """Copy the backbone's (e.g. freshly loaded) last block, norm and, with a table of its own, the last
        layer's relative table, as the official code copies the block after loading ImageNet weights."""
        if (rel_pos is None) != (self.rel_pos is None):
            problem = "a relative table but none was given" if rel_pos is None else "no table to copy to"
            raise ValueError(f"JPM: the branch has {problem}")
        self.block.load_state_dict(last_block.state_dict())
        self.norm.load_state_dict(norm.state_dict())
        if self.rel_pos is not None and rel_pos is not None:
            self.rel_pos.load_state_dict(rel_pos.state_dict())

    def _order_and_chunk(self, num_patches: int, device: torch.device) -> tuple[Tensor, int]:
        """Patch order (shifted and shuffled, or the original) and the chunk length ``N // k``."""
        chunk = num_patches // self.config.num_local
        if chunk < 1:
            raise ValueError(
                f"JPM: {num_patches} patches cannot be split into {self.config.num_local} chunks"
            )
        if self.config.shuffle:
            order = shift_shuffle_order(num_patches, self.config.shift, self.config.groups, device)
        else:
            order = torch.arange(num_patches, device=device)
        return order, chunk

    def local_sequences(self, tokens: Tensor, num_prefix: int) -> Tensor:
        """The ``k`` local sequences ``[k, B, 1 + N // k, D]``, each [CLS] followed by one chunk."""
        patches = tokens[:, num_prefix:]
        order, chunk = self._order_and_chunk(patches.shape[1], patches.device)
        if self.config.shuffle:
            patches = patches[:, order]
        chunks = patches[:, : chunk * self.config.num_local].unflatten(1, (self.config.num_local, chunk))
        cls = tokens[:, None, :1].expand(-1, self.config.num_local, -1, -1)
        return torch.cat([cls, chunks], dim=2).transpose(0, 1)

    def local_positions(
        self, num_patches: int, num_prefix: int, device: torch.device | None = None
    ) -> Tensor:
        """Each local sequence's tokens as indices in the backbone's natural order, ``[k, 1 + N // k]``:
        ``[0, P + o_1, .., P + o_m]`` for the chunk ``o`` of the (shuffled) patch order."""
        order, chunk = self._order_and_chunk(num_patches, device or torch.device("cpu"))
        k = self.config.num_local
        chunks = order[: chunk * k].view(k, chunk) + num_prefix
        return torch.cat([chunks.new_zeros(k, 1), chunks], dim=1)

    def forward(
        self,
        tokens: Tensor,
        num_prefix: int = 1,
        grid: Grid | None = None,
        shared_rel_pos: RelativePositionBias | None = None,
        checkpointed: bool = False,
    ) -> tuple[Tensor, ...]:
        """``checkpointed``: recompute the branch block's activations in backward (the backbone's
        ``grad_checkpointing``; training with grad enabled only, RNG state preserved)."""
        sequences = self.local_sequences(tokens, num_prefix)
        k, batch = sequences.shape[:2]
        table = self.rel_pos if self.rel_pos is not None else shared_rel_pos
        bias = None
        if table is not None:
            positions = self.local_positions(tokens.shape[1] - num_prefix, num_prefix, tokens.device)
            # one bias per branch [k, heads, T', T'], repeated for the B sequences of each branch
            bias = attention_mask(table(positions, grid), sequences).repeat_interleave(batch, dim=0)
        # all k branches share the weights, so they run as one batch of k*B sequences
        inputs = sequences.flatten(0, 1)
        if checkpointed and self.training and torch.is_grad_enabled():
            blocks_out = checkpoint(run_block, self.block, inputs, bias, use_reentrant=False)
        else:
            blocks_out = run_block(self.block, inputs, bias)
        outputs = self.norm(blocks_out)[:, 0]
        return tuple(outputs.unflatten(0, (k, batch)).unbind(0))
