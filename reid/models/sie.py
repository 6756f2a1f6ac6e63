"""Side Information Embedding (SIE), TransReID Sec. 3.2.

A learnable table ``S`` holds one embedding per camera, per viewpoint, or per (camera, viewpoint) pair
(``S[c * N_v + v]``, the official index). It is added to the input tokens with a coefficient lambda
(3.0 in the official configs):

    Z_0 = [x_cls; x_p^1 .. x_p^N] + P + lambda * S[c, v]

The same vector is added to every token of an image ([CLS], part tokens and patches), as in the official
``forward_features`` where ``sie_embed[camera_id]`` of shape ``[B, 1, D]`` broadcasts over all tokens.
A side is used only when it has more than one value (official: ``camera > 1``).

Camera-free mode (ours): when ``camids`` (or ``viewids``) is ``None`` the embedding is averaged over that
axis of the table, so a model trained with SIE can embed images of an unknown or new camera. The mean is
the expected offset under a uniform camera prior; it keeps the token statistics the model saw in training
closer than dropping the term would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.layers import trunc_normal_
from torch import Tensor, nn


@dataclass(frozen=True)
class CameraEmbedConfig:
    """How many cameras / viewpoints get embeddings, and the coefficient lambda."""

    num_cameras: int = 0
    num_views: int = 0
    coefficient: float = 3.0
    init_std: float = 0.02  # official trunc_normal_(std=0.02); 0 starts every camera at the same offset

    def __post_init__(self) -> None:
        if self.init_std < 0:
            raise ValueError(f"CameraEmbedConfig: init_std must be >= 0, got {self.init_std}")
        if self.num_cameras < 0 or self.num_views < 0:
            raise ValueError(
                f"CameraEmbedConfig: num_cameras ({self.num_cameras}) and num_views ({self.num_views}) "
                "must be >= 0"
            )

    @property
    def uses_cameras(self) -> bool:
        return self.num_cameras > 1

    @property
    def uses_views(self) -> bool:
        return self.num_views > 1

    @property
    def enabled(self) -> bool:
        return self.uses_cameras or self.uses_views

    @property
    def table_shape(self) -> tuple[int, int]:
        """(camera rows, view columns) of the table; an unused side has size 1."""
        return (self.num_cameras if self.uses_cameras else 1, self.num_views if self.uses_views else 1)

    @property
    def table_size(self) -> int:
        rows, cols = self.table_shape
        return rows * cols if self.enabled else 0


@dataclass(frozen=True)
class SIEConfig:
    """Which side information a TransReID model embeds (``model.sie``): cameras (``SIE_CAMERA``, person
    data) and/or viewpoints (``SIE_VIEW``, VeRi), with coefficient lambda (``SIE_COE``, 3.0) and the table's
    init std (0.02 official; 0 starts every camera at the same offset). The counts come from the data
    (:meth:`camera_embed`); a side with a single value is dropped by the backbone."""

    camera: bool = False
    view: bool = False
    coefficient: float = 3.0
    init_std: float = 0.02

    def camera_embed(self, num_cameras: int, num_views: int) -> CameraEmbedConfig | None:
        """The backbone's table for data with ``num_cameras`` cameras and ``num_views`` views, or None when
        neither side is on."""
        if not self.camera and not self.view:
            return None
        return CameraEmbedConfig(
            num_cameras=num_cameras if self.camera else 0,
            num_views=num_views if self.view else 0,
            coefficient=float(self.coefficient),
            init_std=float(self.init_std),
        )


def new_sie_table(config: CameraEmbedConfig, dim: int) -> nn.Parameter:
    """The ``[table_size, 1, D]`` table, truncated-normal (std ``init_std``, 0.02 in the official code)."""
    table = nn.Parameter(torch.zeros(config.table_size, 1, dim))
    if config.init_std > 0:
        trunc_normal_(table, std=config.init_std)
    return table


def _check_ids(ids: Tensor, size: int, name: str) -> None:
    if ids.ndim != 1:
        raise ValueError(f"SIE: {name} must be a 1-D tensor of ids, got shape {tuple(ids.shape)}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
        raise ValueError(
            f"SIE: {name} must lie in [0, {size}), got values in [{int(ids.min())}, {int(ids.max())}]"
        )


def sie_offsets(
    table: Tensor, config: CameraEmbedConfig, camids: Tensor | None, viewids: Tensor | None
) -> Tensor:
    """``lambda * S[c * N_v + v]`` as ``[B, 1, D]`` (or ``[1, 1, D]`` when no side is given per image).

    A side whose ids are ``None`` is averaged over (camera-free mode).
    """
    rows, cols = config.table_shape
    grid = table.reshape(rows, cols, table.shape[-1])
    if config.uses_cameras and camids is not None:
        _check_ids(camids, rows, "camids")
        grid = grid[camids]  # [B, cols, D]
    else:
        grid = grid.mean(dim=0, keepdim=True)  # [1, cols, D]; a no-op when cameras are unused
    if config.uses_views and viewids is not None:
        _check_ids(viewids, cols, "viewids")
        if grid.shape[0] not in (1, viewids.shape[0]):
            raise ValueError(f"SIE: {grid.shape[0]} camids but {viewids.shape[0]} viewids")
        batch = viewids.shape[0]
        rows_index = torch.arange(batch, device=viewids.device) if grid.shape[0] == batch else 0
        offsets = grid[rows_index, viewids]  # [B, D]
    else:
        offsets = grid.mean(dim=1)  # [B or 1, D]; a no-op when views are unused
    return config.coefficient * offsets.unsqueeze(1)
