"""ResNet backbone (BoT last stride 1) and torchvision-layout checkpoints."""

import pytest
import torch
import torchvision

from reid.models.cnn_reid_net import CNNReIDNet
from reid.models.resnet import ResNet, resnet18, resnet50, resnet_tiny
from reid.models.sie import CameraEmbedConfig
from reid.models.weights import detect_layout, load_pretrained


def test_last_stride_one_gives_a_16x8_map_for_256x128():
    with torch.device("meta"):  # shapes without compute
        images = torch.empty(2, 3, 256, 128)
        bot, imagenet = resnet50(last_stride=1), resnet50(last_stride=2)
        assert bot.forward_features(images).shape == (2, 2048, 16, 8)
        assert imagenet.forward_features(images).shape == (2, 2048, 8, 4)
    assert bot.num_features == 2048 and bot.no_weight_decay() == set()
    first = bot.layer4[0]
    assert first.conv2.stride == (1, 1) and first.downsample[0].stride == (1, 1)
    assert imagenet.layer4[0].conv2.stride == (2, 2)


def test_small_input_on_the_tiny_resnet():
    net = resnet_tiny().eval()
    with torch.no_grad():
        out = net.forward_features(torch.randn(2, 3, 64, 32))
    assert out.shape == (2, 128, 4, 2) and net.num_features == 128
    assert resnet_tiny(last_stride=2).eval()(torch.randn(1, 3, 64, 32)).shape == (1, 128, 2, 1)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(resnet18, torchvision.models.resnet18), (resnet50, torchvision.models.resnet50)],
)
def test_keys_and_shapes_are_torchvisions_without_fc(ours, theirs):
    with torch.device("meta"):
        mine, ref = ours(last_stride=2).state_dict(), theirs().state_dict()
    assert {k: v.shape for k, v in mine.items()} == {
        k: v.shape for k, v in ref.items() if not k.startswith("fc.")
    }


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="last_stride"):
        resnet_tiny(last_stride=3)
    with pytest.raises(ValueError, match="model.sie"):
        resnet_tiny(camera_embed=CameraEmbedConfig(num_cameras=6, num_views=0, coefficient=3.0))
    with pytest.raises(ValueError, match="4 stages"):
        ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1])


def test_torchvision_imagenet_checkpoint_loads_with_fc_ignored(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet50()  # no weights: the layout is what matters
    torch.save(source.state_dict(), tmp_path / "resnet50-0676ba61.pth")
    net = CNNReIDNet(resnet50(last_stride=1), num_classes=751)
    report = load_pretrained(net, tmp_path / "resnet50-0676ba61.pth")
    assert report.layout == "torchvision"
    assert report.unexpected == ["backbone.fc.bias", "backbone.fc.weight"]
    assert "unexpected (ignored): backbone.fc.bias, backbone.fc.weight" in report.summary()
    assert all(k.startswith("global_head.") for k in report.missing)
    loaded = net.backbone.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            torch.testing.assert_close(loaded[key], value, msg=key)


def test_bare_backbone_loads_the_same_layout(tmp_path):
    torch.manual_seed(0)
    source = resnet_tiny()
    torch.save(source.state_dict(), tmp_path / "tiny.pth")
    target = resnet_tiny()
    report = load_pretrained(target, tmp_path / "tiny.pth")
    assert report.layout == "torchvision" and report.unexpected == [] and report.missing == []
    torch.testing.assert_close(target.state_dict(), source.state_dict())
    assert detect_layout({"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1)}) == (
        "torchvision"
    )


def test_shape_mismatch_names_the_tensor_both_shapes_and_cause(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    net = CNNReIDNet(resnet_tiny(), num_classes=5)
    with pytest.raises(ValueError) as error:
        load_pretrained(net, tmp_path / "resnet18.pth")
    message = str(error.value)
    assert "resnet18.pth (layout torchvision) does not fit the model" in message
    assert "backbone.conv1.weight: checkpoint (64, 3, 7, 7) vs model (16, 3, 7, 7)" in message
    assert "ResNet depth, block type or widths differ" in message


def _official_bot_features(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """reid-strong-baseline ``modeling/backbones/resnet.py`` ``ResNet.forward``: conv1 -> bn1 -> (the ReLU
    line commented out) -> maxpool -> layer1..4, on the same modules."""
    x = net.maxpool(net.bn1(net.conv1(images)))
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = stage(x)
    return x


def test_bot_weights_give_bots_features_without_the_stem_relu(tmp_path):
    """An official BoT checkpoint (torchvision keys) into ``model=bot_r50``'s backbone: its features equal
    the official forward's (no stem ReLU) to 1e-6 relative; with the ReLU they differ (the old form)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from reid.config import CONFIG_DIR

    torch.manual_seed(0)
    official = resnet50(last_stride=1).eval()
    for module in official.modules():  # trained-looking BN statistics, so the stem's negatives matter
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.5, 0.5)
    backbone = OmegaConf.load(CONFIG_DIR / "model" / "bot_r50.yaml").backbone
    ours = instantiate(backbone)().eval()
    ours.load_state_dict(official.state_dict())
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        want = _official_bot_features(official, images)
        got = ours.forward_features(images)
        with_relu = official.forward_features(images)  # torchvision's stem
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6 * float(want.abs().max()))
    assert (with_relu - want).abs().max() > 1e-3 * float(want.abs().max())
    assert isinstance(ours.relu, torch.nn.Identity) and not isinstance(official.relu, torch.nn.Identity)
