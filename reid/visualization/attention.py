"""Attention of [CLS] and of each PASS part token over the image, from a block of our ViT; activation
maps of CNN backbones.

In every block (``reid.models.vit``) each head attends with ``A = softmax(Q K^T / sqrt(d) + B)`` (``B`` the
relative position bias, else 0); training computes it inside ``F.scaled_dot_product_attention`` and never
forms ``A``. Here a forward pre-hook on the last block's ``attn`` module reads its input (the normed tokens)
and its additive mask ``B``, and recomputes ``A`` from the module's own ``qkv`` projection (and ``q_norm`` /
``k_norm``), so the fused path is not changed. ``A`` is averaged over heads, or one head is taken
(``head``); the block is the last unless ``layer`` says another. The rows of [CLS] and of the part
tokens, restricted to the patch columns and renormalised to sum 1, are the maps (patch grid, row-major),
stretched over the image for the picture; :func:`render_head_attention` draws [CLS] of every head side by
side (the DINO picture, Caron et al. 2021, Fig. 1). Every picture has a colour bar: each map is shown
relative to its own maximum.

CNN backbones (BoT, IBN-a, SNR) have no attention; :func:`activation_map` is torchreid's ``visactmap``
(Zhou et al., OSNet, ICCV 2019, Sec. 4): the last stage's feature map ``F`` [C, h, w], summed over channels
of ``F^2`` and normalised to sum 1, where the network's features are large.

Does part token ``r`` look at its region? PASS (Sec. 3.2) trains part ``r`` on local crops of band ``r``
(``reid.data.multicrop.region_bands``: top half, middle half, bottom half for L = 3). The number per part
is the fraction of its patch attention inside its band, with patch row ``i`` covering image rows
``[i H / R, (i + 1) H / R)`` (as the picture stretches it); a map spread evenly scores the band's share of
the image height (0.5 for L = 3).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn

from reid.data.multicrop import region_bands

BAND_NAMES = {3: ("top half", "middle half", "bottom half")}
DISPLAY_HEIGHT = 256
PAD = 4
HEADER_HEIGHT = 16
TITLE_HEIGHT = 28
FONT_SIZE = 11
COLOUR_MAP = "inferno"


def attention_weights(attn: Any, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """``softmax(q k^T * scale + mask)`` per head, ``[B, heads, T, T]``, of a timm ``Attention`` module on its
    input ``x`` ``[B, T, D]`` (the block's normed tokens), as its fused kernel computes it."""
    batch, tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    logits = (q.float() * attn.scale) @ k.float().transpose(-2, -1)
    if attn_mask is not None:
        logits = logits + attn_mask.float()
    return logits.softmax(dim=-1)


@contextmanager
def capture_attention(
    attn: nn.Module, head: int | None = None, per_head: bool = False
) -> Iterator[list[Tensor]]:
    """While open, every forward of ``attn`` appends its weights to the list yielded (no gradient): averaged
    over heads ``[B, T, T]``, or head ``head`` alone, or every head ``[B, heads, T, T]`` with ``per_head``;
    the module's output is untouched."""
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args else kwargs["x"]
        mask = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
        with torch.no_grad():
            weights = attention_weights(module, x, mask)
            if per_head:
                captured.append(weights)
            else:
                captured.append(weights.mean(dim=1) if head is None else weights[:, head])

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


@dataclass(frozen=True)
class AttentionMaps:
    """``cls`` ``[B, R, C]`` and ``parts`` ``[B, L, R, C]``: attention over the patch grid (R x C), each map
    summing to 1."""

    cls: Tensor
    parts: Tensor


def _maps(weights: Tensor, num_prefix: int, grid: tuple[int, int]) -> Tensor:
    rows = weights[:, :num_prefix, num_prefix:]
    rows = rows / rows.sum(dim=-1, keepdim=True)
    return rows.reshape(weights.shape[0], num_prefix, *grid)


def _check_choice(backbone: Any, layer: int, head: int | None) -> None:
    if not hasattr(backbone, "blocks") or not hasattr(backbone, "num_prefix_tokens"):
        raise TypeError(
            "attention maps need a ViT backbone (reid.models.vit.VisionTransformer), got "
            f"{type(backbone).__name__}"
        )
    depth, heads = len(backbone.blocks), backbone.blocks[-1].attn.num_heads
    if not -depth <= layer < depth:
        raise ValueError(f"--layer {layer}: the ViT has {depth} blocks (0..{depth - 1}, or -1 for the last)")
    if head is not None and not 0 <= head < heads:
        raise ValueError(
            f"--head {head}: the ViT has {heads} heads (0..{heads - 1}; leave it out for the mean)"
        )


@torch.no_grad()
def block_attention(
    backbone: Any,
    images: Tensor,
    camids: Tensor | None = None,
    layer: int = -1,
    head: int | None = None,
) -> AttentionMaps:
    """The maps of ``images`` (model input, ``[B, 3, H, W]``) in block ``layer`` (default the last) of a
    :class:`~reid.models.vit.VisionTransformer`, heads averaged or head ``head`` (eval mode; SIE
    camera-free without ``camids``)."""
    _check_choice(backbone, layer, head)
    with capture_attention(backbone.blocks[layer].attn, head) as captured:
        grid = backbone.forward_tokens_on_grid(images, camids).grid
    if len(captured) != 1:
        raise RuntimeError(f"expected one pass through block {layer}, saw {len(captured)}")
    maps = _maps(captured[0], backbone.num_prefix_tokens, tuple(grid))
    return AttentionMaps(cls=maps[:, 0], parts=maps[:, 1:])


def last_block_attention(backbone: Any, images: Tensor, camids: Tensor | None = None) -> AttentionMaps:
    """:func:`block_attention` of the last block, heads averaged."""
    return block_attention(backbone, images, camids)


@torch.no_grad()
def head_attention(backbone: Any, images: Tensor, layer: int = -1) -> Tensor:
    """``[B, heads, R, C]``: the [CLS] map of every head in block ``layer`` (the DINO picture)."""
    _check_choice(backbone, layer, None)
    with capture_attention(backbone.blocks[layer].attn, per_head=True) as captured:
        grid = backbone.forward_tokens_on_grid(images, None).grid
    weights = captured[0]  # [B, heads, T, T]
    batch, heads = weights.shape[:2]
    maps = _maps(weights.reshape(batch * heads, *weights.shape[2:]), backbone.num_prefix_tokens, tuple(grid))
    return maps[:, 0].reshape(batch, heads, *grid)


@torch.no_grad()
def activation_map(backbone: Any, images: Tensor) -> Tensor:
    """``[B, h, w]``: torchreid's activation map of a CNN backbone (module docstring), summing to 1."""
    if not hasattr(backbone, "forward_features"):
        raise TypeError(
            f"activation maps need a backbone with forward_features, got {type(backbone).__name__}"
        )
    feature_map = backbone.forward_features(images).float()
    if feature_map.ndim != 4:
        raise TypeError(
            f"activation maps need a [B, C, h, w] feature map, got shape {list(feature_map.shape)}"
        )
    energy = feature_map.pow(2).sum(dim=1)
    return energy / energy.sum(dim=(1, 2), keepdim=True).clamp(min=1e-12)


def band_fractions(parts: Tensor, image_height: int) -> Tensor:
    """``[B, L]``: the share of part ``r``'s map inside band ``r`` of ``region_bands(image_height, L)``, patch
    row ``i`` covering image rows ``[i H / R, (i + 1) H / R)`` (module docstring)."""
    num_parts, num_rows = parts.shape[1], parts.shape[2]
    row_mass = parts.sum(dim=-1)  # [B, L, R]
    bounds = torch.arange(num_rows + 1, dtype=torch.float64) * (image_height / num_rows)
    shares = []
    for part, (top, height) in enumerate(region_bands(image_height, num_parts)):
        overlap = (bounds[1:].clamp(max=top + height) - bounds[:-1].clamp(min=top)).clamp(min=0)
        shares.append((row_mass[:, part].double() * (overlap / (image_height / num_rows))).sum(dim=-1))
    return torch.stack(shares, dim=1).float()


def band_name(part: int, num_parts: int, image_height: int) -> str:
    """``"top half"`` etc. for PASS's three bands, else the band's pixel rows."""
    if num_parts in BAND_NAMES:
        return BAND_NAMES[num_parts][part]
    top, height = region_bands(image_height, num_parts)[part]
    return f"rows {top}-{top + height}"


def _overlay(image: Image.Image, grid_map: Tensor) -> Image.Image:
    heat = grid_map / grid_map.max().clamp(min=1e-12)
    small = Image.fromarray(heat.float().numpy().astype(np.float32)).resize(
        image.size, Image.Resampling.BILINEAR
    )
    coloured = colormaps[COLOUR_MAP](np.clip(np.asarray(small), 0.0, 1.0))
    heat_image = Image.fromarray((coloured[..., :3] * 255).astype(np.uint8))
    return Image.blend(image, heat_image, 0.55)


COLOUR_BAR_WIDTH = 14
COLOUR_BAR_SPACE = COLOUR_BAR_WIDTH + 40  # the bar and its tick labels


def picture_size(num_parts: int, display: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` of :func:`render_attention`: image, [CLS] and ``num_parts`` panels of ``display``
    ``(height, width)`` each, then the colour bar."""
    return panels_size(2 + num_parts, display)


def panels_size(num_panels: int, display: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` of a picture of ``num_panels`` panels and the colour bar."""
    height, width = display
    return (
        PAD + num_panels * (width + PAD) + COLOUR_BAR_SPACE,
        PAD + HEADER_HEIGHT + TITLE_HEIGHT + height + PAD,
    )


def colour_bar_box(num_panels: int, display: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (exclusive) of the colour bar: its top is the colour of a map's maximum."""
    x0 = PAD + num_panels * (display[1] + PAD)
    y0 = PAD + HEADER_HEIGHT + TITLE_HEIGHT
    return x0, y0, x0 + COLOUR_BAR_WIDTH, y0 + display[0]


def _draw_colour_bar(canvas: Image.Image, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    levels = np.linspace(1.0, 0.0, y1 - y0)[:, None].repeat(x1 - x0, axis=1)
    bar = (colormaps[COLOUR_MAP](levels)[..., :3] * 255).astype(np.uint8)
    canvas.paste(Image.fromarray(bar), (x0, y0))
    font = ImageFont.load_default(size=FONT_SIZE)
    draw.text((x1 + 3, y0 - 2), "max", fill=(0, 0, 0), font=font)
    draw.text((x1 + 3, (y0 + y1) // 2 - 6), "0.5", fill=(0, 0, 0), font=font)
    draw.text((x1 + 3, y1 - 12), "0", fill=(0, 0, 0), font=font)
    draw.text((x0, y0 - TITLE_HEIGHT / 2), "of max", fill=(0, 0, 0), font=font)


def render_panels(image: Image.Image, maps: list[tuple[str, str, Tensor]], header: str) -> Image.Image:
    """The image, then one panel per ``(title, subtitle, map)`` over it, then the colour bar."""
    display = display_size((image.height, image.width))
    shown = image.convert("RGB").resize((display[1], display[0]), Image.Resampling.BICUBIC)
    panels = [("image", "", shown), *((t, sub, _overlay(shown, m)) for t, sub, m in maps)]
    canvas = Image.new("RGB", panels_size(len(panels), display), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    draw.text((PAD, PAD), header, fill=(0, 0, 0), font=font)
    top = PAD + HEADER_HEIGHT + TITLE_HEIGHT
    for index, (title, subtitle, panel) in enumerate(panels):
        x = PAD + index * (display[1] + PAD)
        draw.text((x, top - TITLE_HEIGHT), title, fill=(0, 0, 0), font=font)
        draw.text((x, top - TITLE_HEIGHT / 2), subtitle, fill=(0, 0, 0), font=font)
        canvas.paste(panel, (x, top))
    _draw_colour_bar(canvas, draw, colour_bar_box(len(panels), display))
    return canvas


def render_head_attention(image: Image.Image, heads: Tensor, header: str) -> Image.Image:
    """The image and the [CLS] map of every head (``[heads, R, C]``), each relative to its maximum."""
    return render_panels(image, [(f"head {h}", "[CLS]", heads[h]) for h in range(heads.shape[0])], header)


def render_activation(image: Image.Image, activation: Tensor, header: str) -> Image.Image:
    """The image and its activation map (:func:`activation_map`)."""
    return render_panels(image, [("activation", "sum of squares", activation)], header)


def display_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of a panel for an image of ``image_size`` ``(H, W)``: ``DISPLAY_HEIGHT`` high."""
    return DISPLAY_HEIGHT, max(1, round(DISPLAY_HEIGHT * image_size[1] / image_size[0]))


def render_attention(
    image: Image.Image, cls: Tensor, parts: Tensor, fractions: Tensor, input_height: int, header: str
) -> Image.Image:
    """One picture: the image, the [CLS] map and one map per part token (``[L, R, C]``) over it, each part
    titled with its band and its share inside it (``fractions`` ``[L]``), the band outlined."""
    num_parts = parts.shape[0]
    display = display_size((image.height, image.width))
    chance = (
        [height / input_height for _, height in region_bands(input_height, num_parts)] if num_parts else []
    )
    maps = [("[CLS]", "", cls)]
    for part in range(num_parts):
        name = f"part {part + 1}: {band_name(part, num_parts, input_height)}"
        share = f"{fractions[part]:.2f} in band (even {chance[part]:.2f})"
        maps.append((name, share, parts[part]))
    canvas = render_panels(image, maps, header)
    draw = ImageDraw.Draw(canvas)
    top = PAD + HEADER_HEIGHT + TITLE_HEIGHT
    for part in range(num_parts):  # outline the band of each part token
        x = PAD + (part + 2) * (display[1] + PAD)
        band_top, band_height = region_bands(input_height, num_parts)[part]
        scale = display[0] / input_height
        box = (
            x,
            top + round(band_top * scale),
            x + display[1] - 1,
            top + round((band_top + band_height) * scale) - 1,
        )
        draw.rectangle(box, outline=(0, 255, 255), width=2)
    return canvas
