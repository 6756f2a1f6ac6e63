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
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


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


def as_jpm_config(value: JPMConfig | Mapping[str, Any] | None) -> JPMConfig | None:
    """Accept a config, a dict (Hydra) or ``None`` (no JPM)."""
    if value is None or isinstance(value, JPMConfig):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - {"shift", "groups", "num_local", "shuffle"}
        if unknown:
            raise ValueError(
                f"jpm: unknown keys {sorted(unknown)}; expected shift, groups, num_local, shuffle"
            )
        return JPMConfig(**{str(k): v for k, v in value.items()})
    raise TypeError(f"jpm: expected JPMConfig, a mapping or None, got {type(value)}")


def shift_shuffle_order(
    num_patches: int, shift: int, groups: int, device: torch.device | None = None
) -> Tensor:
    """Patch indices (0-based) of the shifted and shuffled sequence (length rounded up to a multiple of G)."""
    if not 1 <= shift <= num_patches:
        raise ValueError(f"JPM: shift must be in [1, {num_patches}] for {num_patches} patches, got {shift}")
    order = torch.arange(num_patches, device=device).roll(-(shift - 1))
    padding = -num_patches % groups
    if padding:
        order = torch.cat([order, order[-2:-1].expand(padding)])
    return order.view(groups, -1).t().reshape(-1)


class JigsawPatchModule(nn.Module):
    """k local branches sharing one copy of the backbone's last block and norm (official ``b2``).

    ``forward(tokens, num_prefix)`` takes the tokens before the last block ``[B, P + N, D]`` (``P`` prefix
    tokens: [CLS] then part tokens, which JPM ignores) and returns the ``k`` local features ``[B, D]``.
    Keys: ``block.*``, ``norm.*``.
    """

    def __init__(self, last_block: nn.Module, norm: nn.Module, config: JPMConfig) -> None:
        super().__init__()
        self.config = config
        self.block = copy.deepcopy(last_block)
        self.norm = copy.deepcopy(norm)

    def load_from_backbone(self, last_block: nn.Module, norm: nn.Module) -> None:
        """Copy the backbone's (e.g. freshly loaded) last block and norm, as the official code does after
        loading ImageNet weights."""
        self.block.load_state_dict(last_block.state_dict())
        self.norm.load_state_dict(norm.state_dict())

    def local_sequences(self, tokens: Tensor, num_prefix: int) -> Tensor:
        """The ``k`` local sequences ``[k, B, 1 + N // k, D]``, each [CLS] followed by one chunk."""
        patches = tokens[:, num_prefix:]
        num_patches = patches.shape[1]
        chunk = num_patches // self.config.num_local
        if chunk < 1:
            raise ValueError(
                f"JPM: {num_patches} patches cannot be split into {self.config.num_local} chunks"
            )
        if self.config.shuffle:
            order = shift_shuffle_order(num_patches, self.config.shift, self.config.groups, patches.device)
            patches = patches[:, order]
        chunks = patches[:, : chunk * self.config.num_local].unflatten(1, (self.config.num_local, chunk))
        cls = tokens[:, None, :1].expand(-1, self.config.num_local, -1, -1)
        return torch.cat([cls, chunks], dim=2).transpose(0, 1)

    def forward(self, tokens: Tensor, num_prefix: int = 1) -> tuple[Tensor, ...]:
        sequences = self.local_sequences(tokens, num_prefix)
        k, batch = sequences.shape[:2]
        # all k branches share the weights, so they run as one batch of k*B sequences
        outputs = self.norm(self.block(sequences.flatten(0, 1)))[:, 0]
        return tuple(outputs.unflatten(0, (k, batch)).unbind(0))
