"""Vision Transformer backbone for re-identification (TransReID, TransReID-SSL, PASS).

Tokens (TransReID Sec. 3.1-3.2, PASS Sec. 3.2):

    Z_0 = [x_cls + p_cls; x_part_1 + p_part_1 .. x_part_L + p_part_L; E(x)_1 + p_1 .. E(x)_N + p_N]
          + lambda * S[c, v]                                    (SIE, only when configured)
    Z_l = Block_l(Z_{l-1}),  l = 1..depth;   output = LayerNorm(Z_depth)

and, in every block, per head: ``Attn(Q, K, V) = softmax(Q K^T / sqrt(d) + B_l) V`` with ``B_l = 0`` for the
plain ViT, or the relative position bias ``B_l[h, i, j] = table_l[index[i, j], h]`` when ``rel_pos_bias`` is
set (``relative_position.py``: one learned entry per patch offset, own entries for [CLS] / part tokens;
one table per layer, or one shared by all layers with ``shared: true``). ``B`` reaches timm's ``Block`` as
its additive ``attn_mask``, so attention stays ``F.scaled_dot_product_attention`` (the fused kernel).

``E`` is the overlapping patch embedding (``patch_embed.py``), ``p`` learned position embeddings (the
[CLS] and part positions are kept apart from the patch grid so the grid alone can be resized), ``S`` the
side-information table (``sie.py``). Blocks are timm's pre-norm ``Block`` (qkv bias, MLP ratio 4,
LayerNorm eps 1e-6), with drop-path rates rising linearly from 0 to ``drop_path_rate``.

Inputs of another size than ``img_size`` (DINO local crops) get the patch position grid resized
bilinearly (``position.py``; DINO's ``interpolate_pos_encoding`` does the same with bicubic), and the
relative tables bicubically (``resize_relative_table``).

State-dict keys (the checkpoint loader relies on them): ``patch_embed.proj.*`` (``patch_embed.stem.*``
with the ICS stem), ``cls_token`` [1,1,D], ``part_tokens`` [1,L,D], ``cls_pos`` [1,1,D], ``part_pos``
[1,L,D], ``pos_embed`` [1,N,D] (patches only), ``sie_embed`` [S,1,D], ``blocks.{i}.*``, ``norm.*``,
``rel_pos.{i}.table`` [(2H-1)(2W-1) + 2P + P^2, heads] (only with ``rel_pos_bias``; i = 0 when shared), and
the int64 buffer ``pos_grid`` = [rows, cols] of ``pos_embed``'s grid (no parameters; it records the grid
so that a checkpoint of ours says how to resize it). A state dict without ``pos_grid`` (timm, official
TransReID / DINO / PASS layouts, older exports) loads as before; one whose grid differs is refused.

Activation checkpointing (``grad_checkpointing=True``; Chen et al. 2016, "Training Deep Nets with Sublinear
Memory Cost"; timm's ``set_grad_checkpointing``): in training with grad enabled, each block ``Block_l`` (the
loop of ``forward_tokens_on_grid`` and ``forward_block``) runs under ``torch.utils.checkpoint.checkpoint``
(non-reentrant, RNG state preserved), so only its input ``Z_{l-1}`` is kept and its activations are
recomputed in the backward pass: the same forward (DropPath and dropout redraw the same masks) and the same
gradients for about one extra forward of the blocks. Unlike timm's ViT, which skips checkpointing when an
attention mask is given, the relative-position-bias path is checkpointed too. Eval and ``torch.no_grad``
run the blocks plainly; the flag is no parameter or buffer, so the state-dict keys do not change.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple, cast

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from reid.models.patch_embed import OverlapPatchEmbed, StemKind
from reid.models.position import POS_GRID, resize_pos_embed
from reid.models.relative_position import (
    Grid,
    RelativePositionBias,
    RelPosBiasConfig,
    attention_mask,
    run_block,
)
from reid.models.sie import CameraEmbedConfig, new_sie_table, sie_offsets


class TokensOnGrid(NamedTuple):
    tokens: Tensor  # [B, P + N, D]
    grid: Grid  # (rows, cols) of the N patch tokens, row-major


class VisionTransformer(nn.Module):
    """ViT with overlapping patches, optional part tokens (PASS) and optional SIE (TransReID).

    ``forward_tokens(x, camids, viewids, depth)`` runs the first ``depth`` blocks (negative counts from
    the end, so ``depth=-1`` stops before the last block, where TransReID's global and JPM branches split);
    ``forward_features`` runs all blocks and the final norm. ``forward_tokens_on_grid`` also returns the
    patch grid of the input, which ``forward_block(i, tokens, grid)`` needs for block ``i``'s bias.
    ``grad_checkpointing`` (or ``set_grad_checkpointing``) recomputes each block's activations in backward.
    """

    def __init__(
        self,
        img_size: tuple[int, int] = (256, 128),
        patch_size: int = 16,
        stride: int | None = None,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        num_parts: int = 0,
        camera_embed: CameraEmbedConfig | None = None,
        stem: StemKind = "patch",
        input_norm: bool = False,
        stem_dim: int = 64,
        block_layer: type[nn.Module] = Block,
        rel_pos_bias: RelPosBiasConfig | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if num_parts < 0:
            raise ValueError(f"VisionTransformer: num_parts must be >= 0, got {num_parts}")
        if not isinstance(grad_checkpointing, bool):
            raise TypeError(
                f"VisionTransformer: grad_checkpointing (model.backbone.grad_checkpointing) must be true or "
                f"false, got {grad_checkpointing!r}"
            )
        self.grad_checkpointing = grad_checkpointing
        self.embed_dim = self.num_features = embed_dim
        self.num_parts = num_parts
        self.num_prefix_tokens = 1 + num_parts
        self.patch_embed = OverlapPatchEmbed(
            img_size, patch_size, stride, in_chans, embed_dim, stem, input_norm, stem_dim
        )
        self.grid_size = self.patch_embed.grid_size
        num_patches = self.patch_embed.num_patches

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if num_parts:
            self.part_tokens = nn.Parameter(torch.zeros(1, num_parts, embed_dim))
            self.part_pos = nn.Parameter(torch.zeros(1, num_parts, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim))
        self.register_buffer(POS_GRID, torch.tensor(self.grid_size, dtype=torch.long))
        if camera_embed is not None and not isinstance(camera_embed, CameraEmbedConfig):
            raise TypeError(
                f"camera_embed: expected a CameraEmbedConfig (reid.models.sie), got {camera_embed}"
            )
        self.camera_embed = camera_embed if camera_embed is not None and camera_embed.enabled else None
        if self.camera_embed is not None:
            self.sie_embed = new_sie_table(self.camera_embed, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)

        drop_path_rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            block_layer(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=rate,
                norm_layer=norm_layer,
            )
            for rate in drop_path_rates
        )
        self.norm = norm_layer(embed_dim)
        if rel_pos_bias is not None and not isinstance(rel_pos_bias, RelPosBiasConfig):
            raise TypeError(
                f"rel_pos_bias: expected a reid.models.relative_position.RelPosBiasConfig, got {rel_pos_bias}"
            )
        self.rel_pos_config = rel_pos_bias
        self.rel_pos: nn.ModuleList | None = None
        if self.rel_pos_config is not None:  # zero tables: created after the seeded init draws nothing
            count = 1 if self.rel_pos_config.shared else depth
            self.rel_pos = nn.ModuleList(
                RelativePositionBias(self.grid_size, num_heads, self.num_prefix_tokens) for _ in range(count)
            )
        self._init_weights()

    def _init_weights(self) -> None:
        # official TransReID / DINO: trunc-normal(0.02) tokens, positions and Linear weights; zero biases
        for name, param in self.named_parameters(recurse=False):
            if name != "sie_embed":  # already initialised by new_sie_table
                trunc_normal_(param, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Tensor],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """The grid record is optional (official layouts lack it) and must equal this model's grid."""
        key = prefix + POS_GRID
        saved = state_dict.get(key)
        if saved is not None and saved.device.type != "meta" and tuple(saved.tolist()) != self.grid_size:
            error_msgs.append(
                f"{key}: the checkpoint's position grid is {'x'.join(map(str, saved.tolist()))}, this "
                f"model's {self.grid_size[0]}x{self.grid_size[1]}; load it with "
                "reid.models.weights.load_pretrained (model.weights=...), which resizes the grid"
            )
            state_dict = {k: v for k, v in state_dict.items() if k != key}
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if key not in state_dict and key in missing_keys:
            missing_keys.remove(key)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn activation checkpointing of the blocks on or off (timm contract)."""
        self.grad_checkpointing = enable

    def _run_block(self, block: nn.Module, tokens: Tensor, bias: Tensor | None) -> Tensor:
        """One block, under a non-reentrant checkpoint when checkpointing applies (training, grad on)."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            # preserve_rng_state (the default): the recompute redraws DropPath / dropout masks identically
            return checkpoint(run_block, block, tokens, bias, use_reentrant=False, preserve_rng_state=True)
        return run_block(block, tokens, bias)

    def no_weight_decay(self) -> set[str]:
        """Token, position and side-information embeddings and relative tables (timm / BEiT contract)."""
        names = {"cls_token", "cls_pos", "pos_embed", "part_tokens", "part_pos", "sie_embed"}
        tables = {f"rel_pos.{i}.table" for i in range(len(self.rel_pos or ()))}
        return {name for name, _ in self.named_parameters(recurse=False) if name in names} | tables

    def patch_pos_embed(self, grid: Grid | None = None) -> Tensor:
        """Patch position embeddings ``[1, N, D]`` for ``grid`` (resized when it is not the model's)."""
        if grid is None or tuple(grid) == self.grid_size:
            return self.pos_embed
        return resize_pos_embed(
            self.pos_embed, new_grid=(int(grid[0]), int(grid[1])), old_grid=self.grid_size
        )

    def rel_pos_of(self, block: int) -> RelativePositionBias | None:
        """The relative table block ``block`` reads (the shared one, or the block's own), if any."""
        if self.rel_pos is None:
            return None
        index = block % len(self.blocks)
        return cast(RelativePositionBias, self.rel_pos[0 if len(self.rel_pos) == 1 else index])

    def attn_bias(
        self, block: int, grid: Grid | None = None, positions: Tensor | None = None
    ) -> Tensor | None:
        """Block ``block``'s additive attention bias on ``grid`` (default the model's): ``[heads, T, T]`` for
        the natural token order, or for tokens at ``positions`` (``[T']`` / ``[S, T']``, indices in the
        natural order, e.g. JPM's shuffled chunks); ``None`` without relative position bias."""
        table = self.rel_pos_of(block)
        return None if table is None else table(positions, grid)

    def patch_biases(self, grid: Grid | None = None) -> Tensor | None:
        """Patch-to-patch bias of every table, ``[L, heads, N, N]`` (L = depth, or 1 when shared)."""
        if self.rel_pos is None:
            return None
        return torch.stack([cast(RelativePositionBias, table).patch_bias(grid) for table in self.rel_pos])

    def _masks(self, count: int, tokens: Tensor, grid: Grid) -> list[Tensor | None]:
        if self.rel_pos is None:
            return [None] * count
        if len(self.rel_pos) == 1:  # shared: gather the bias once for all blocks
            return [attention_mask(self.rel_pos[0](None, grid), tokens)] * count
        return [attention_mask(self.rel_pos[i](None, grid), tokens) for i in range(count)]

    def forward_block(self, block: int, tokens: Tensor, grid: Grid | None = None) -> Tensor:
        """Block ``block`` (negative counts from the end) on tokens in the natural order of ``grid``."""
        bias = self.attn_bias(block, grid)
        return self._run_block(self.blocks[block], tokens, bias)

    def embed_on_grid(
        self, x: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None
    ) -> TokensOnGrid:
        """Image ``[B, C, H, W]`` -> input tokens ``Z_0`` ``[B, 1 + L + N, D]`` and their patch grid."""
        feature_map = self.patch_embed.feature_map(x)
        grid = (feature_map.shape[-2], feature_map.shape[-1])
        # another input size (e.g. DINO local crops): the position grid is resized
        patches = feature_map.flatten(2).transpose(1, 2) + self.patch_pos_embed(grid)
        batch = patches.shape[0]
        prefix = [(self.cls_token + self.cls_pos).expand(batch, -1, -1)]
        if self.num_parts:
            prefix.append((self.part_tokens + self.part_pos).expand(batch, -1, -1))
        tokens = torch.cat([*prefix, patches], dim=1)
        if self.camera_embed is not None:
            tokens = tokens + sie_offsets(self.sie_embed, self.camera_embed, camids, viewids)
        return TokensOnGrid(self.pos_drop(tokens), grid)

    def embed(self, x: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None) -> Tensor:
        """Image ``[B, C, H, W]`` -> input tokens ``Z_0`` ``[B, 1 + L + N, D]``."""
        return self.embed_on_grid(x, camids, viewids).tokens

    def forward_tokens_on_grid(
        self, x: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None, depth: int | None = None
    ) -> TokensOnGrid:
        """Tokens after the first ``depth`` blocks (all when ``None``; ``-1`` = all but the last), no norm,
        with the input's patch grid."""
        total = len(self.blocks)
        if depth is not None and not -total <= depth <= total:
            raise ValueError(f"VisionTransformer: depth must be None or in [-{total}, {total}], got {depth}")
        num_blocks = total if depth is None else (depth if depth >= 0 else total + depth)
        tokens, grid = self.embed_on_grid(x, camids, viewids)
        masks = self._masks(num_blocks, tokens, grid)
        for block, mask in zip(self.blocks[:num_blocks], masks, strict=True):
            tokens = self._run_block(block, tokens, mask)
        return TokensOnGrid(tokens, grid)

    def forward_tokens(
        self, x: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None, depth: int | None = None
    ) -> Tensor:
        """Tokens after the first ``depth`` blocks (all when ``None``; ``-1`` = all but the last), no norm."""
        return self.forward_tokens_on_grid(x, camids, viewids, depth).tokens

    def forward_features(
        self, x: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None
    ) -> Tensor:
        """All tokens after every block and the final norm, ``[B, 1 + L + N, D]``."""
        return self.norm(self.forward_tokens(x, camids, viewids))

    def forward_head(self, tokens: Tensor) -> Tensor:
        """The [CLS] token, ``[B, D]``."""
        return tokens[:, 0]

    def forward(self, x: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(x, camids, viewids))


def vit_tiny(**kwargs: Any) -> VisionTransformer:
    """A small ViT for tests and the CPU demo: D 192, depth 4, 3 heads."""
    return VisionTransformer(**{"embed_dim": 192, "depth": 4, "num_heads": 3, **kwargs})


def vit_small(**kwargs: Any) -> VisionTransformer:
    """ViT-S/16: D 384, depth 12, 6 heads (TransReID-SSL, PASS)."""
    return VisionTransformer(**{"embed_dim": 384, "depth": 12, "num_heads": 6, **kwargs})


def vit_base(**kwargs: Any) -> VisionTransformer:
    """ViT-B/16: D 768, depth 12, 12 heads (TransReID)."""
    return VisionTransformer(**{"embed_dim": 768, "depth": 12, "num_heads": 12, **kwargs})
