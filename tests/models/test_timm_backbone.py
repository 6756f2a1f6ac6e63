"""Any timm backbone by name (issue 32, item 5): two timm families, a CNN and a ViT, each build under the
BoT recipe (`model=bot_timm`) and train a step on the tiny synthetic tree with the project's neck, heads
and losses; bad values are refused naming the key."""

from __future__ import annotations

import pytest
import torch

from reid.models.timm_backbone import TimmBackbone
from tests.tools.trained_runs import ONE_STEP, _fit_in_process

FAMILIES = {
    "resnet18": ["model.backbone.name=resnet18"],  # feature map [B, 512, 4, 2] at output stride 16
    "vit_tiny": [
        "model.backbone.name=vit_tiny_patch16_224",
        "model.backbone.last_stride=2",
        "model.backbone.kwargs={img_size:[64,32]}",
    ],  # [CLS] token as a 1 x 1 map
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_timm_family_trains_a_step_with_the_projects_neck_and_losses(family, tmp_path, tiny_data_dir):
    out = tmp_path / "run"
    overrides = ["data=synthetic_tiny", "model=bot_timm", *FAMILIES[family], *ONE_STEP]
    _fit_in_process([*overrides, f"paths.data_dir={tiny_data_dir}"], out)
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert any(key.startswith("net.backbone.model.") for key in state)
    assert "net.global_head.bottleneck.weight" in state  # the BNNeck
    assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())


def test_the_feature_map_follows_the_model_and_the_stride():
    images = torch.randn(2, 3, 64, 32)
    cnn = TimmBackbone("resnet18", last_stride=1)
    assert cnn.forward_features(images).shape == (2, 512, 4, 2)  # output stride 16, as BoT's last stride 1
    assert TimmBackbone("resnet18", last_stride=2).forward_features(images).shape == (2, 512, 2, 1)
    vit = TimmBackbone("vit_tiny_patch16_224", kwargs={"img_size": [64, 32]})
    assert vit.forward_features(images).shape == (2, vit.num_features, 1, 1)
    assert "model.pos_embed" in vit.no_weight_decay()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "resnet_999"}, ValueError, r"model.backbone.name='resnet_999': not a timm model"),
        (
            {"name": "resnet18", "weights": "/nowhere.pth"},
            FileNotFoundError,
            r"model.backbone.weights=/nowhere",
        ),
        ({"name": "vit_tiny_patch16_224", "last_stride": 1}, ValueError, r"set model.backbone.last_stride=2"),
        (
            {"name": "resnet18", "camera_embed": {"camera": True}},
            ValueError,
            r"SIE .* needs the project's ViT",
        ),
        ({"name": "resnet18", "stem_relu": False}, ValueError, r"stem_relu=False"),
    ],
)
def test_bad_values_name_the_key(kwargs, error, match):
    with pytest.raises(error, match=match):
        TimmBackbone(**kwargs)


def test_weights_come_from_a_local_file(tmp_path):
    source = TimmBackbone("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(source.model.state_dict(), path)
    loaded = TimmBackbone("resnet18", weights=str(path))
    for name, value in source.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[name]), name
