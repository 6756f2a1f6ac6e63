"""ViT backbone: token layout, shapes, part tokens, stems, the timm contract."""

import pytest
import torch

from reid.models.patch_embed import IBN
from reid.models.position import resize_pos_embed
from reid.models.sie import CameraEmbedConfig
from reid.models.vit import VisionTransformer, vit_tiny

TINY = {"img_size": (32, 16), "patch_size": 8, "depth": 2, "embed_dim": 48}


@pytest.mark.parametrize(
    ("stride", "stem", "grid"),
    [(8, "patch", (4, 2)), (6, "patch", (5, 2)), (8, "ics", (4, 2)), (6, "ics", (5, 2))],
)
@pytest.mark.parametrize("num_parts", [0, 1, 2, 3, 4])
def test_token_shapes(stride, stem, grid, num_parts):
    model = vit_tiny(stride=stride, stem=stem, num_parts=num_parts, **TINY).eval()
    assert model.grid_size == grid
    num_patches = grid[0] * grid[1]
    images = torch.randn(2, 3, 32, 16)
    tokens = model.forward_features(images)
    assert tokens.shape == (2, 1 + num_parts + num_patches, 48)
    assert model(images).shape == (2, 48)
    assert model.num_prefix_tokens == 1 + num_parts
    assert model.pos_embed.shape == (1, num_patches, 48)
    if num_parts:
        assert model.part_tokens.shape == model.part_pos.shape == (1, num_parts, 48)
    else:
        assert not hasattr(model, "part_tokens")


def test_state_dict_keys_follow_the_contract():
    model = vit_tiny(num_parts=3, camera_embed=CameraEmbedConfig(num_cameras=6), **TINY)
    keys = set(model.state_dict())
    for key in ["patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "cls_pos", "part_tokens",
                "part_pos", "pos_embed", "sie_embed", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.bias",
                "norm.weight", "norm.bias"]:  # fmt: skip
        assert key in keys, key
    assert model.sie_embed.shape == (6, 1, 48)
    ics = vit_tiny(stem="ics", **TINY)
    assert any(k.startswith("patch_embed.stem.") for k in ics.state_dict())


def test_embed_layout_cls_parts_then_patches():
    model = vit_tiny(num_parts=2, **TINY).eval()
    images = torch.randn(1, 3, 32, 16)
    tokens = model.embed(images)
    torch.testing.assert_close(tokens[:, 0], (model.cls_token + model.cls_pos)[:, 0])
    torch.testing.assert_close(tokens[:, 1:3], model.part_tokens + model.part_pos)
    torch.testing.assert_close(tokens[:, 3:], model.patch_embed(images) + model.pos_embed)


@pytest.mark.parametrize("stem", ["patch", "ics"])
def test_other_input_size_resizes_the_position_grid(stem):
    model = vit_tiny(stride=6, stem=stem, **TINY).eval()  # learned grid 5 x 2 at 32 x 16
    local_crops = torch.randn(2, 3, 20, 14)  # grid 3 x 2
    tokens = model.embed(local_crops)
    assert tokens.shape == (2, 1 + 6, 48)
    pos = resize_pos_embed(model.pos_embed, new_grid=(3, 2), old_grid=(5, 2))
    torch.testing.assert_close(tokens[:, 1:], model.patch_embed(local_crops) + pos)
    assert model.forward_features(local_crops).shape == (2, 7, 48)


def test_forward_tokens_depth_and_final_norm():
    model = vit_tiny(**{**TINY, "depth": 3}).eval()
    images = torch.randn(2, 3, 32, 16)
    before_last = model.forward_tokens(images, depth=-1)
    manual = model.embed(images)
    for block in model.blocks[:2]:
        manual = block(manual)
    torch.testing.assert_close(before_last, manual)
    torch.testing.assert_close(model.forward_features(images), model.norm(model.blocks[2](before_last)))
    torch.testing.assert_close(model.forward_tokens(images, depth=0), model.embed(images))
    with pytest.raises(ValueError, match="depth"):
        model.forward_tokens(images, depth=4)


def test_drop_path_rates_rise_linearly():
    model = vit_tiny(drop_path_rate=0.3, **{**TINY, "depth": 4})
    rates = [
        block.drop_path1.drop_prob if hasattr(block.drop_path1, "drop_prob") else 0.0
        for block in model.blocks
    ]
    torch.testing.assert_close(torch.tensor(rates), torch.tensor([0.0, 0.1, 0.2, 0.3]))


def test_no_weight_decay_names_exist():
    model = vit_tiny(num_parts=2, camera_embed=CameraEmbedConfig(num_cameras=3), **TINY)
    names = dict(model.named_parameters())
    assert model.no_weight_decay() == {
        "cls_token",
        "cls_pos",
        "pos_embed",
        "part_tokens",
        "part_pos",
        "sie_embed",
    }
    assert all(name in names for name in model.no_weight_decay())
    assert vit_tiny(**TINY).no_weight_decay() == {"cls_token", "cls_pos", "pos_embed"}


def test_bad_inputs_raise_clear_errors():
    model = vit_tiny(**TINY)
    with pytest.raises(ValueError, match="H, W >= patch_size 8"):
        model(torch.randn(1, 3, 6, 32))
    with pytest.raises(ValueError, match="stem must be"):
        vit_tiny(stem="conv", **TINY)
    with pytest.raises(ValueError, match="must be even"):
        vit_tiny(stem="ics", stride=5, **{**TINY, "patch_size": 8})
    with pytest.raises(ValueError, match=r"stride must be in \[1, 8\]"):
        vit_tiny(stride=9, **TINY)
    with pytest.raises(ValueError, match="num_parts"):
        VisionTransformer(num_parts=-1)


def test_ibn_normalises_half_the_channels_per_instance():
    ibn = IBN(6).train()
    x = torch.randn(3, 6, 4, 4) * 5 + 2
    out = ibn(x)
    torch.testing.assert_close(out[:, :3].mean(dim=(2, 3)), torch.zeros(3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 3:].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    assert not torch.allclose(out[:, 3:].mean(dim=(2, 3)), torch.zeros(3, 3), atol=1e-3)


@pytest.mark.parametrize("stem", ["patch", "ics"])
def test_input_norm_removes_a_per_channel_colour_cast_and_adds_no_parameters(stem):
    torch.manual_seed(0)
    plain = vit_tiny(stem=stem, **TINY).eval()
    normed = vit_tiny(stem=stem, input_norm=True, **TINY).eval()
    # no parameters: the state dicts differ only by the flag buffer that records the option
    assert set(normed.state_dict()) - set(plain.state_dict()) == {"patch_embed.input_norm_flag"}
    normed.load_state_dict(plain.state_dict() | {"patch_embed.input_norm_flag": torch.ones(())})
    images = torch.rand(2, 3, 32, 16)
    gain, offset = torch.tensor([0.6, 1.3, 0.9]), torch.tensor([0.1, -0.2, 0.05])
    cast = images * gain[:, None, None] + offset[:, None, None]
    mean, std = images.mean((2, 3), keepdim=True), images.std((2, 3), unbiased=False, keepdim=True)
    standardised = (images - mean) / std
    with torch.no_grad():
        features = normed.forward_features(images)
        torch.testing.assert_close(normed.forward_features(cast), features, atol=2e-3, rtol=0)
        assert not torch.allclose(plain.forward_features(cast), plain.forward_features(images), atol=2e-3)
        torch.testing.assert_close(
            normed.forward_features(images), plain.forward_features(standardised), atol=1e-4, rtol=1e-4
        )


def test_ics_stem_width_is_a_knob_and_the_export_reads_it_back():
    from reid.tools.export_backbone import architecture, build_backbone

    narrow = vit_tiny(stem="ics", stem_dim=16, num_heads=1, **TINY).eval()  # export: 64-d heads, >= 1
    shapes = {k: tuple(v.shape) for k, v in narrow.state_dict().items() if k.startswith("patch_embed.")}
    assert shapes["patch_embed.stem.0.weight"] == (16, 3, 7, 7)  # 7x7 stride-2 conv, TransReID-SSL ConvStem
    assert shapes["patch_embed.stem.3.weight"] == (16, 16, 3, 3)
    assert shapes["patch_embed.proj.weight"] == (48, 16, 4, 4)  # half the patch on the half-size image
    assert architecture(narrow.state_dict())["stem_dim"] == 16
    rebuilt = build_backbone(narrow.state_dict(), TINY["img_size"]).eval()
    images = torch.randn(2, 3, 32, 16)
    torch.testing.assert_close(rebuilt(images), narrow(images), rtol=0, atol=0)
    assert vit_tiny(stem="ics", **TINY).patch_embed.stem[0].out_channels == 64  # the official width
    with pytest.raises(ValueError, match="stem_dim"):
        vit_tiny(stem="ics", stem_dim=0, **TINY)
