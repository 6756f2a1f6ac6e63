"""Position-embedding resize and side-information embedding (SIE)."""

import pytest
import torch

from reid.models.position import grid_size, resize_pos_embed
from reid.models.sie import CameraEmbedConfig, SIEConfig, sie_offsets
from reid.models.vit import vit_tiny


def test_grid_size_matches_official_overlap_formula():
    assert grid_size((256, 128), 16, 12) == (21, 10)
    assert grid_size((256, 128), 16, 16) == (16, 8)
    assert grid_size((256, 128), 16, 11) == (22, 11)


def test_resize_keeps_values_when_grid_unchanged():
    pos = torch.randn(1, 6 * 3, 5)
    out = resize_pos_embed(pos, new_grid=(6, 3), old_grid=(6, 3))
    assert torch.equal(out, pos)
    assert out.data_ptr() != pos.data_ptr()


def _bilinear_reference(grid: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Half-pixel-centre bilinear interpolation (align_corners=False) written as a loop."""
    old_rows, old_cols, dim = grid.shape
    out = torch.zeros(rows, cols, dim)
    for i in range(rows):
        for j in range(cols):
            y = max((i + 0.5) * old_rows / rows - 0.5, 0.0)
            x = max((j + 0.5) * old_cols / cols - 0.5, 0.0)
            y0, x0 = min(int(y), old_rows - 1), min(int(x), old_cols - 1)
            y1, x1 = min(y0 + 1, old_rows - 1), min(x0 + 1, old_cols - 1)
            wy, wx = y - y0, x - x0
            out[i, j] = (
                (1 - wy) * (1 - wx) * grid[y0, x0]
                + (1 - wy) * wx * grid[y0, x1]
                + wy * (1 - wx) * grid[y1, x0]
                + wy * wx * grid[y1, x1]
            )
    return out


def test_resize_is_bilinear_from_square_grid():
    torch.manual_seed(0)
    pos = torch.randn(1, 4 * 4, 3)
    out = resize_pos_embed(pos, new_grid=(7, 3))  # old grid inferred as 4 x 4
    expected = _bilinear_reference(pos.reshape(4, 4, 3), 7, 3).reshape(1, 21, 3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_resize_hand_computed_1d_upsampling():
    # a 1 x 2 grid [0, 4] -> 1 x 4: sample points x = -0.25, 0.25, 0.75, 1.25 -> clamp -> 0, 1, 3, 4
    pos = torch.tensor([[[0.0], [4.0]]])
    out = resize_pos_embed(pos, new_grid=(1, 4), old_grid=(1, 2))
    assert out.flatten().tolist() == [0.0, 1.0, 3.0, 4.0]


def test_resize_rejects_non_square_without_grid():
    with pytest.raises(ValueError, match="square grid"):
        resize_pos_embed(torch.zeros(1, 12, 2), new_grid=(4, 3))


def test_sie_table_index_is_camera_times_views_plus_view():
    config = CameraEmbedConfig(num_cameras=3, num_views=2, coefficient=3.0)
    table = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1).expand(6, 1, 2)
    out = sie_offsets(table, config, torch.tensor([0, 2, 1]), torch.tensor([1, 0, 1]))
    assert out.shape == (3, 1, 2)
    assert out[:, 0, 0].tolist() == [3.0 * 1, 3.0 * 4, 3.0 * 3]


def test_sie_camera_free_mode_uses_mean_embedding():
    config = CameraEmbedConfig(num_cameras=3, num_views=2, coefficient=2.0)
    table = torch.randn(6, 1, 4)
    grid = table.reshape(3, 2, 4)
    no_camera = sie_offsets(table, config, None, torch.tensor([1, 0]))
    torch.testing.assert_close(no_camera[:, 0], 2.0 * grid.mean(0)[[1, 0]])
    nothing = sie_offsets(table, config, None, None)
    torch.testing.assert_close(nothing, 2.0 * table.mean(0, keepdim=True))
    no_view = sie_offsets(table, config, torch.tensor([2]), None)
    torch.testing.assert_close(no_view[:, 0], 2.0 * grid[2].mean(0, keepdim=True))


def test_sie_single_side_and_disabled_configs():
    """A table with one camera and one view embeds nothing: the backbone drops it; SIEConfig (model.sie)
    gives the counts of the sides it turns on."""
    assert vit_tiny(camera_embed=CameraEmbedConfig(num_cameras=1, num_views=1)).camera_embed is None
    cams = SIEConfig(camera=True).camera_embed(num_cameras=6, num_views=4)
    assert cams is not None and cams.table_size == 6 and SIEConfig().camera_embed(6, 4) is None
    views = CameraEmbedConfig(num_cameras=1, num_views=4, coefficient=1.0)
    table = torch.randn(4, 1, 3)
    torch.testing.assert_close(
        sie_offsets(table, views, torch.tensor([0, 0]), torch.tensor([3, 1])), table[[3, 1]]
    )
    with pytest.raises(TypeError, match="camera_embed: expected a CameraEmbedConfig"):
        vit_tiny(camera_embed={"num_cameras": 6})


def test_sie_rejects_out_of_range_ids():
    config = CameraEmbedConfig(num_cameras=3)
    with pytest.raises(ValueError, match=r"camids must lie in \[0, 3\)"):
        sie_offsets(torch.zeros(3, 1, 2), config, torch.tensor([3]), None)


def test_sie_is_added_to_cls_and_patch_tokens_only_by_the_coefficient():
    torch.manual_seed(0)
    kw = {"img_size": (32, 16), "patch_size": 8, "stride": 8, "depth": 1, "embed_dim": 48}
    plain = vit_tiny(**kw)
    with_sie = vit_tiny(camera_embed=CameraEmbedConfig(num_cameras=4, coefficient=3.0), **kw)
    with_sie.load_state_dict(plain.state_dict(), strict=False)
    images = torch.randn(2, 3, 32, 16)
    camids = torch.tensor([3, 1])
    delta = with_sie.embed(images, camids) - plain.embed(images)
    assert delta.shape == (2, 1 + 8, 48)
    expected = 3.0 * with_sie.sie_embed[camids]  # [B, 1, D], the same for every token
    torch.testing.assert_close(delta, expected.expand_as(delta), rtol=0, atol=1e-5)


def test_sie_table_init_std_official_and_zero():
    from reid.models.sie import new_sie_table

    torch.manual_seed(0)
    official = new_sie_table(CameraEmbedConfig(num_cameras=6), 384)
    assert 0.015 < float(official.std()) < 0.025  # trunc_normal_(std=0.02)
    zero = new_sie_table(CameraEmbedConfig(num_cameras=6, init_std=0.0), 384)
    assert float(zero.abs().max()) == 0.0
    with pytest.raises(ValueError, match="init_std"):
        CameraEmbedConfig(num_cameras=6, init_std=-1.0)
    assert CameraEmbedConfig(num_cameras=6, init_std=0.0).init_std == 0.0
