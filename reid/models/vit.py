"""Vision Transformer backbone for re-identification (TransReID, TransReID-SSL, PASS).

Tokens (TransReID Sec. 3.1-3.2, PASS Sec. 3.2):

    Z_0 = [x_cls + p_cls; x_part_1 + p_part_1 .. x_part_L + p_part_L; E(x)_1 + p_1 .. E(x)_N + p_N]
          + lambda * S[c, v]                                    (SIE, only when configured)
    Z_l = Block_l(Z_{l-1}),  l = 1..depth;   output = LayerNorm(Z_depth)

``E`` is the overlapping patch embedding (``patch_embed.py``), ``p`` learned position embeddings (the
[CLS] and part positions are kept apart from the patch grid so the grid alone can be resized), ``S`` the
side-information table (``sie.py``). Blocks are timm's pre-norm ``Block`` (qkv bias, MLP ratio 4,
LayerNorm eps 1e-6), with drop-path rates rising linearly from 0 to ``drop_path_rate``.

Inputs of another size than ``img_size`` (DINO local crops) get the patch position grid resized
bilinearly (``position.py``; DINO's ``interpolate_pos_encoding`` does the same with bicubic).

State-dict keys (the checkpoint loader relies on them): ``patch_embed.proj.*`` (``patch_embed.stem.*``
with the ICS stem), ``cls_token`` [1,1,D], ``part_tokens`` [1,L,D], ``cls_pos`` [1,1,D], ``part_pos``
[1,L,D], ``pos_embed`` [1,N,D] (patches only), ``sie_embed`` [S,1,D], ``blocks.{i}.*``, ``norm.*``, and
the int64 buffer ``pos_grid`` = [rows, cols] of ``pos_embed``'s grid (no parameters; it records the grid
so that a checkpoint of ours says how to resize it). A state dict without ``pos_grid`` (timm, official
TransReID / DINO / PASS layouts, older exports) loads as before; one whose grid differs is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from reid.models.patch_embed import OverlapPatchEmbed, StemKind
from reid.models.position import POS_GRID, resize_pos_embed
from reid.models.sie import CameraEmbedConfig, as_camera_embed_config, new_sie_table, sie_offsets


class VisionTransformer(nn.Module):
    """ViT with overlapping patches, optional part tokens (PASS) and optional SIE (TransReID).

    ``forward_tokens(x, camids, viewids, depth)`` runs the first ``depth`` blocks (negative counts from
    the end, so ``depth=-1`` stops before the last block, where TransReID's global and JPM branches split);
    ``forward_features`` runs all blocks and the final norm.
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
        camera_embed: CameraEmbedConfig | Mapping[str, Any] | None = None,
        stem: StemKind = "patch",
        input_norm: bool = False,
        stem_dim: int = 64,
        block_layer: type[nn.Module] = Block,
    ) -> None:
        super().__init__()
        if num_parts < 0:
            raise ValueError(f"VisionTransformer: num_parts must be >= 0, got {num_parts}")
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
        self.camera_embed = as_camera_embed_config(camera_embed)
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

    def no_weight_decay(self) -> set[str]:
        """Token, position and side-information embeddings (timm contract)."""
        names = {"cls_token", "cls_pos", "pos_embed", "part_tokens", "part_pos", "sie_embed"}
        return {name for name, _ in self.named_parameters(recurse=False) if name in names}

    def embed(self, x: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None) -> Tensor:
        """Image ``[B, C, H, W]`` -> input tokens ``Z_0`` ``[B, 1 + L + N, D]``."""
        feature_map = self.patch_embed.feature_map(x)
        grid = (feature_map.shape[-2], feature_map.shape[-1])
        pos_embed = self.pos_embed
        if grid != self.grid_size:  # another input size (e.g. DINO local crops): resize the grid
            pos_embed = resize_pos_embed(pos_embed, new_grid=grid, old_grid=self.grid_size)
        patches = feature_map.flatten(2).transpose(1, 2) + pos_embed
        batch = patches.shape[0]
        prefix = [(self.cls_token + self.cls_pos).expand(batch, -1, -1)]
        if self.num_parts:
            prefix.append((self.part_tokens + self.part_pos).expand(batch, -1, -1))
        tokens = torch.cat([*prefix, patches], dim=1)
        if self.camera_embed is not None:
            tokens = tokens + sie_offsets(self.sie_embed, self.camera_embed, camids, viewids)
        return self.pos_drop(tokens)

    def forward_tokens(
        self, x: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None, depth: int | None = None
    ) -> Tensor:
        """Tokens after the first ``depth`` blocks (all when ``None``; ``-1`` = all but the last), no norm."""
        total = len(self.blocks)
        if depth is not None and not -total <= depth <= total:
            raise ValueError(f"VisionTransformer: depth must be None or in [-{total}, {total}], got {depth}")
        num_blocks = total if depth is None else (depth if depth >= 0 else total + depth)
        tokens = self.embed(x, camids, viewids)
        for block in self.blocks[:num_blocks]:
            tokens = block(tokens)
        return tokens

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
