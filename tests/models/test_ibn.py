"""IBN-a ResNet-50 against the official IBN-Net structure and math.

Official code read with the fetch tool: XingangPan/IBN-Net ``ibnnet/modules.py`` (``IBN``: ``half =
int(planes * ratio)``, ratio 0.5; ``IN = InstanceNorm2d(half, affine=True)``, ``BN = BatchNorm2d(planes -
half)``; forward splits the channels at ``half``, normalises both parts, concatenates) and
``ibnnet/resnet_ibn.py`` (``Bottleneck_IBN``: ``bn1 = IBN(planes)`` when ``ibn == 'a'``, stride on the
3x3 conv2; ``resnet50_ibn_a``: ``ResNet_IBN(Bottleneck_IBN, [3, 4, 6, 3], ibn_cfg=('a', 'a', 'a', None))``,
every block of layers 1-3 gets IBN, layer4 and the stem BN keep BatchNorm; ``fc`` 2048 -> 1000; checkpoint
``resnet50_ibn_a-d9d0bb7b.pth`` loaded with ``model.load_state_dict`` into that structure, so its keys are
the structure's). The same structure is in michuanhaohao/reid-strong-baseline
``modeling/backbones/resnet_ibn_a.py`` (IBN unless ``planes == 512``) and JDAI-CV/fast-reid
``fastreid/modeling/backbones/resnet.py`` (``with_ibn`` for layers 1-3, not layer4) with
``fastreid/layers/batch_norm.py`` ``IBN`` (``half1 = int(planes / 2)``).

The counts below are computed from that structure by :func:`_official_entries` (a walk of the
official ``_make_layer``), not from our model: 25,557,032 parameters and 346 state-dict entries for the
official model with ``fc`` (the same parameter total as torchvision's ResNet-50: IBN swaps ``2 planes``
BN affine parameters for ``2 half + 2 (planes - half)``; each of the 13 IBN blocks adds 2 entries, the
IN affine pair, IN keeping no running statistics), i.e. 23,508,032 and 344 without ``fc``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from reid.models.cnn_reid_net import CNNReIDNet
from reid.models.ibn import IBN, with_ibn_a
from reid.models.resnet import resnet50, resnet50_ibn_a, resnet_tiny_ibn_a
from reid.models.weights import load_pretrained


# ---- a transcription of the official IBN-a math (ibnnet/modules.py, ibnnet/resnet_ibn.py) -------------
class _OfficialIBN(nn.Module):
    def __init__(self, planes: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(planes * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        split = torch.split(x, self.half, 1)
        return torch.cat((self.IN(split[0].contiguous()), self.BN(split[1].contiguous())), 1)


class _OfficialBottleneckIBN(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = _OfficialIBN(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.relu(out)


def _official_entries(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of the official ``resnet50_ibn_a`` (walk of ``ResNet_IBN.__init__`` and
    ``_make_layer``: Bottleneck_IBN, layers [3, 4, 6, 3], ibn_cfg ('a', 'a', 'a', None))."""
    entries: dict[str, tuple[int, ...]] = {}

    def bn(name: str, c: int) -> None:
        entries.update({f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,)})
        entries.update({f"{name}.running_var": (c,), f"{name}.num_batches_tracked": ()})

    entries["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks, stride, ibn) in enumerate(
        [(64, 3, 1, True), (128, 4, 2, True), (256, 6, 2, True), (512, 3, 2, False)], start=1
    ):
        for i in range(blocks):
            pre = f"layer{stage}.{i}."
            entries[pre + "conv1.weight"] = (planes, inplanes, 1, 1)
            if ibn:
                half = int(planes * 0.5)
                entries.update({pre + "bn1.IN.weight": (half,), pre + "bn1.IN.bias": (half,)})
                bn(pre + "bn1.BN", planes - half)
            else:
                bn(pre + "bn1", planes)
            entries[pre + "conv2.weight"] = (planes, planes, 3, 3)
            bn(pre + "bn2", planes)
            entries[pre + "conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(pre + "bn3", planes * 4)
            if i == 0 and (stride != 1 or inplanes != planes * 4):
                entries[pre + "downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(pre + "downsample.1", planes * 4)
            inplanes = planes * 4
    entries.update({"fc.weight": (num_classes, 2048), "fc.bias": (num_classes,)})
    return entries


def _learnable(entries: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for k, s in entries.items() if k.endswith(("weight", "bias")))


def test_parameter_count_and_keys_equal_the_official_model():
    official = _official_entries()
    assert (len(official), _learnable(official)) == (346, 25_557_032)
    with torch.device("meta"):
        ours = resnet50_ibn_a(last_stride=2)
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == {k: s for k, s in official.items() if not k.startswith("fc.")}
    assert (len(mine), sum(p.numel() for p in ours.parameters())) == (344, 23_508_032)
    plain = sum(p.numel() for p in torchvision.models.resnet50(weights=None).parameters())
    assert plain == 25_557_032  # IBN-a changes no parameter count


def test_ibn_sits_on_bn1_of_every_block_of_stages_1_to_3_only():
    with torch.device("meta"):
        net = resnet50_ibn_a()
    assert isinstance(net.bn1, nn.BatchNorm2d)
    for stage, planes in zip(range(1, 5), (64, 128, 256, 512)):
        for block in getattr(net, f"layer{stage}"):
            if stage < 4:
                assert isinstance(block.bn1, IBN) and block.bn1.instance_channels == planes // 2
                assert block.bn1.IN.affine and not block.bn1.IN.track_running_stats
                assert block.bn1.BN.num_features == planes - planes // 2
            else:
                assert type(block.bn1) is nn.BatchNorm2d
            assert type(block.bn2) is nn.BatchNorm2d and type(block.bn3) is nn.BatchNorm2d
    assert net.layer4[0].conv2.stride == (1, 1)  # last stride 1 (BoT) by default


def test_ibn_normalises_the_first_half_per_image_and_the_rest_per_batch():
    torch.manual_seed(0)
    ibn = IBN(6).train()
    x = torch.randn(4, 6, 5, 3) * 3 + 1
    out = ibn(x)
    first, rest = x[:, :3], x[:, 3:]
    per_image = (first - first.mean((2, 3), keepdim=True)) / torch.sqrt(
        first.var((2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    per_batch = (rest - rest.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        rest.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    torch.testing.assert_close(out, torch.cat((per_image, per_batch), 1), rtol=1e-5, atol=1e-5)
    assert IBN(5).instance_channels == 2  # int(planes * 0.5), the official rounding
    with pytest.raises(ValueError, match="ratio=0.1 of 5 channels"):
        IBN(5, ratio=0.1)


def _randomise_norms(module: nn.Module) -> None:
    for norm in module.modules():
        if isinstance(norm, (nn.BatchNorm2d, nn.InstanceNorm2d)) and norm.affine:
            nn.init.uniform_(norm.weight, 0.5, 1.5)
            nn.init.uniform_(norm.bias, -0.5, 0.5)
        if isinstance(norm, nn.BatchNorm2d):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize(("stage", "index"), [(1, 0), (2, 0), (3, 1)])
@pytest.mark.parametrize("training", [True, False])
def test_a_block_computes_what_the_official_bottleneck_ibn_computes(stage, index, training):
    """Our block's weights, loaded strictly into the transcribed official block: same output."""
    torch.manual_seed(stage)
    block = getattr(resnet50_ibn_a(last_stride=1), f"layer{stage}")[index]
    with torch.no_grad():
        _randomise_norms(block)
    inplanes = block.conv1.in_channels
    planes, stride = block.conv1.out_channels, block.conv2.stride[0]
    downsample = None
    if block.downsample is not None:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * 4),
        )
    official = _OfficialBottleneckIBN(inplanes, planes, stride, downsample)
    official.load_state_dict(block.state_dict(), strict=True)
    block.train(training), official.train(training)
    x = torch.randn(2, inplanes, 8, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x.clone()), official(x.clone()))


def _official_checkpoint(path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A ``resnet50_ibn_a-d9d0bb7b.pth`` look-alike: the official keys and shapes, random values."""
    g = torch.Generator().manual_seed(seed)
    state = {
        k: torch.randint(0, 5, s) if k.endswith("num_batches_tracked") else torch.rand(s, generator=g) + 0.1
        for k, s in _official_entries().items()
    }
    torch.save(state, path)
    return state


def test_an_official_layout_checkpoint_fills_the_ibn_backbone(tmp_path):
    state = _official_checkpoint(tmp_path / "resnet50_ibn_a-d9d0bb7b.pth")
    net = CNNReIDNet(resnet50_ibn_a(last_stride=1), num_classes=751)
    report = load_pretrained(net, tmp_path / "resnet50_ibn_a-d9d0bb7b.pth")  # strict fill
    assert report.layout == "torchvision"
    assert not [k for k in report.missing if k.startswith("backbone.")]  # the BNNeck head stays fresh
    assert report.unexpected == ["backbone.fc.bias", "backbone.fc.weight"]
    loaded = net.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("fc."))


def test_a_plain_resnet50_checkpoint_does_not_fill_the_ibn_backbone(tmp_path):
    torch.save(resnet50(last_stride=2).state_dict(), tmp_path / "resnet50-0676ba61.pth")
    with pytest.raises(ValueError, match="resnet50-0676ba61.pth"):
        load_pretrained(CNNReIDNet(resnet50_ibn_a(), num_classes=751), tmp_path / "resnet50-0676ba61.pth")


def test_tiny_ibn_variant_and_refusal_of_a_non_batchnorm_block():
    net = resnet_tiny_ibn_a().eval()
    assert isinstance(net.layer1[0].bn1, IBN) and isinstance(net.layer3[0].bn1, IBN)
    assert type(net.layer4[0].bn1) is nn.BatchNorm2d
    with torch.no_grad():
        assert net.forward_features(torch.randn(2, 3, 64, 32)).shape == (2, 128, 4, 2)
    with pytest.raises(TypeError, match="layer1 block bn1 is a IBN"):
        with_ibn_a(net)
