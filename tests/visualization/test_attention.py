"""Attention maps of the last ViT block: the recomputed weights are the ones the fused kernel applies
(with relative position bias), the maps are distributions over the patch grid, the band shares are
hand-computed, and the picture has one panel per part token."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from reid.models.relative_position import RelPosBiasConfig
from reid.models.vit import vit_tiny
from reid.visualization.attention import (
    attention_weights,
    band_fractions,
    capture_attention,
    display_size,
    last_block_attention,
    picture_size,
    render_attention,
)


def pass_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = vit_tiny(img_size=(64, 32), num_parts=3, rel_pos_bias=RelPosBiasConfig(shared=False)).eval()
    for table in model.rel_pos:  # zero-initialised: give the bias something to do
        torch.nn.init.normal_(table.table, std=0.5)
    return model


def test_recomputed_weights_reproduce_the_fused_attention_output():
    model, images = pass_vit(), torch.randn(2, 3, 64, 32)
    attn = model.blocks[-1].attn
    assert attn.fused_attn  # the path training uses is F.scaled_dot_product_attention
    seen: dict[str, torch.Tensor] = {}

    def inputs(module, args, kwargs):
        seen["x"], seen["mask"] = args[0], kwargs.get("attn_mask")

    def output(module, args, kwargs, result):
        seen["out"] = result

    handles = [attn.register_forward_pre_hook(inputs, with_kwargs=True)]
    handles.append(attn.register_forward_hook(output, with_kwargs=True))
    with torch.no_grad():
        model.forward_features(images)
    for handle in handles:
        handle.remove()
    assert seen["mask"] is not None  # the relative position bias reaches the block as its mask
    x = seen["x"]
    weights = attention_weights(attn, x, seen["mask"])  # [B, heads, T, T]
    assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    v = attn.qkv(x).reshape(*x.shape[:2], 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)[2]
    rebuilt = attn.proj((weights @ v).transpose(1, 2).reshape(x.shape))
    assert torch.allclose(rebuilt, seen["out"], atol=1e-5)


def test_maps_are_distributions_over_the_grid_and_leave_the_model_unchanged():
    model, images = pass_vit(), torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        plain = model.forward_features(images)
    maps = last_block_attention(model, images)
    assert maps.cls.shape == (2, 4, 2) and maps.parts.shape == (2, 3, 4, 2)  # one map per part token
    assert torch.allclose(maps.cls.sum((-1, -2)), torch.ones(2), atol=1e-6)
    assert torch.allclose(maps.parts.sum((-1, -2)), torch.ones(2, 3), atol=1e-6)
    with torch.no_grad(), capture_attention(model.blocks[-1].attn) as captured:
        hooked = model.forward_features(images)
    assert torch.equal(plain, hooked) and len(captured) == 1 and captured[0].shape == (2, 12, 12)
    assert not model.blocks[-1].attn._forward_pre_hooks  # the hook is gone afterwards
    with pytest.raises(TypeError, match="ViT backbone"):
        last_block_attention(torch.nn.Conv2d(3, 3, 1), images)


def test_band_shares_hand_computed():
    # 3 patch rows over 64 image rows: [0, 21.3), [21.3, 42.7), [42.7, 64); PASS bands (L = 3):
    # top [0, 32), middle [16, 48), bottom [32, 64)
    even = torch.full((1, 3, 3, 2), 1 / 6)
    assert band_fractions(even, 64)[0].tolist() == pytest.approx([0.5, 0.5, 0.5], abs=1e-6)
    middle_row = torch.zeros(1, 3, 3, 2)
    middle_row[:, :, 1] = 0.5
    assert band_fractions(middle_row, 64)[0].tolist() == pytest.approx([0.5, 1.0, 0.5], abs=1e-6)
    own_band = torch.zeros(1, 3, 4, 2)  # 4 patch rows of 16 pixels: each part in its own band
    own_band[0, 0, 0:2], own_band[0, 1, 1:3], own_band[0, 2, 2:4] = 0.25, 0.25, 0.25
    assert band_fractions(own_band, 64)[0].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    own_band[0, 0] = own_band[0, 2].clone()  # part 1 looking at the bottom instead
    assert band_fractions(own_band, 64)[0, 0].item() == pytest.approx(0.0, abs=1e-6)


def test_picture_has_image_cls_and_one_panel_per_part():
    model, images = pass_vit(), torch.randn(1, 3, 64, 32)
    maps = last_block_attention(model, images)
    shares = band_fractions(maps.parts, 64)[0]
    image = Image.new("RGB", (32, 64), (90, 90, 90))
    picture = render_attention(image, maps.cls[0], maps.parts[0], shares, 64, "header")
    assert picture.size == picture_size(3, display_size((64, 32)))
    assert picture_size(3, (256, 128))[0] > picture_size(1, (256, 128))[0]
