"""SNR block and SNR ResNet (reid.models.snr), their checkpoints, and a tiny SNR training run.

The block is checked against the paper's equations (Jin et al., CVPR 2020, Sec. 3.1;
../shared/REFERENCE.md "SNR") on hand-made maps. Where the equations leave a choice, the authors'
released SNR block decides: microsoft/SNR ``classification/PACS/resnet_SNR.py`` (read with the
read_file tool), ``ChannelGate_sub`` -- global average pooling, 1x1 convolutions with bias at
``C // 16`` hidden channels, ReLU, sigmoid, returning ``x * a`` and ``x * (1 - a)``; ``x_IN = IN(x)``
(``InstanceNorm2d(affine=True)``), ``x_style = x - x_IN``, next stage input ``x_IN + useful``; convs
Kaiming-normal fan-out with zero bias, IN weight 1 and bias 0. Their re-id code was never released
(microsoft/SNR issue #9).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet as tv

from reid.losses import CausalityTerm, IDLoss, ObjectiveInput, TripletLoss
from reid.models.cnn_reid_net import CNNReIDNet
from reid.models.resnet import ResNet, resnet50, resnet_tiny, resnet_tiny_ibn_a
from reid.models.sie import CameraEmbedConfig
from reid.models.snr import SNRBlock, SNRResNet, snr_resnet, stage_feature_name
from reid.models.weights import backbone_keys, load_pretrained
from reid.run import run
from tests.conftest import TINY_RUN

NUM_CLASSES = 4
TINY_WIDTHS = {"layer1": 16, "layer2": 32, "layer3": 64, "layer4": 128}


def _images(n: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, 64, 32, generator=torch.Generator().manual_seed(1))


def _snr_net(stages=(1, 2, 3, 4), seed: int = 0) -> CNNReIDNet:
    torch.manual_seed(seed)
    return CNNReIDNet(snr_resnet(resnet_tiny, stages=stages), NUM_CLASSES)


def test_block_on_hand_made_maps():
    """Channel c holds [c, c + 2] (a 1 x 2 map): IN gives [-1, 1] (mean c + 1, variance 1), so
    R = F - F~ = [c + 1, c + 1]. With the gate forced to 0.25 (W1 = 0, b1 = 0 -> hidden 0 -> a =
    sigmoid(b2), b2 = log(1/3)): F~+ = F~ + R / 4, F~- = F~ + 3 R / 4."""
    channels = 16
    c = torch.arange(channels, dtype=torch.float64)
    maps = torch.stack((c, c + 2), dim=-1)[None, :, None, :]  # [1, 16, 1, 2]
    block = SNRBlock(channels).double()
    with torch.no_grad():
        block.gate.fc1.weight.zero_()
        block.gate.fc1.bias.zero_()
        block.gate.fc2.bias.fill_(math.log(1 / 3))
    out = block(maps)
    eps = block.norm.eps
    normed = torch.tensor([-1.0, 1.0], dtype=torch.float64) / math.sqrt(1 + eps)
    torch.testing.assert_close(out.normalized, normed.expand(1, channels, 1, 2))
    residual = maps - out.normalized
    torch.testing.assert_close(
        residual, (c + 1)[None, :, None, None].expand(1, channels, 1, 2), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(out.gate, torch.full((1, channels), 0.25, dtype=torch.float64))
    torch.testing.assert_close(out.enhanced, out.normalized + 0.25 * residual)
    torch.testing.assert_close(out.contaminated, out.normalized + 0.75 * residual)
    assert out.output is out.enhanced  # F~ + R+ goes on to the next stage
    r_plus, r_minus = out.enhanced - out.normalized, out.contaminated - out.normalized
    torch.testing.assert_close(r_plus + r_minus, residual)  # R+ + R- = R


def test_block_shapes_instance_statistics_and_gate():
    gen = torch.Generator().manual_seed(0)
    maps = 3.0 + 2.0 * torch.randn(4, 32, 6, 5, generator=gen, dtype=torch.float64)
    block = SNRBlock(32).double()
    with torch.no_grad():
        block.norm.weight.fill_(2.0)
        block.norm.bias.fill_(0.5)
    out = block(maps)
    for tensor in (out.output, out.normalized, out.enhanced, out.contaminated):
        assert tensor.shape == maps.shape
    assert out.gate.shape == (4, 32) and bool(((out.gate > 0) & (out.gate < 1)).all())
    # IN: per image and channel, mean = beta and (biased) std = gamma, over the 6 x 5 positions
    torch.testing.assert_close(out.normalized.mean(dim=(2, 3)), torch.full((4, 32), 0.5, dtype=torch.float64))
    std = out.normalized.var(dim=(2, 3), unbiased=False).sqrt()
    torch.testing.assert_close(std, torch.full((4, 32), 2.0, dtype=torch.float64), atol=1e-5, rtol=0)
    # the gate is a function of the residual's channel means only (global average pooling first)
    residual = maps - out.normalized
    torch.testing.assert_close(out.gate, block.gate(residual.mean(dim=(2, 3), keepdim=True)))
    r_plus, r_minus = out.enhanced - out.normalized, out.contaminated - out.normalized
    torch.testing.assert_close(r_plus, out.gate[:, :, None, None] * residual)
    torch.testing.assert_close(r_plus + r_minus, residual)


def test_gate_has_reduction_16_and_biases_and_learns():
    block = SNRBlock(64)
    fc1, fc2 = block.gate.fc1, block.gate.fc2
    assert (fc1.in_channels, fc1.out_channels, fc2.in_channels, fc2.out_channels) == (64, 4, 4, 64)
    assert fc1.kernel_size == (1, 1) and fc1.bias is not None and fc2.bias is not None
    assert (
        SNRBlock(2048).gate.fc1.out_channels == 128 and SNRBlock(64, reduction=4).gate.fc1.out_channels == 16
    )
    assert torch.count_nonzero(fc1.bias) == 0 and torch.count_nonzero(fc2.bias) == 0  # official init
    assert torch.equal(block.norm.weight, torch.ones(64)) and torch.equal(block.norm.bias, torch.zeros(64))
    out = block(torch.randn(2, 64, 4, 4, generator=torch.Generator().manual_seed(0)))
    (out.output.square().mean() + out.contaminated.mean()).backward()
    for name, param in block.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="channels=8 with reduction=16"):
        SNRBlock(8)


@pytest.mark.parametrize("stages", [(1, 2, 3, 4), (2, 4)])
def test_snr_resnet_stages(stages):
    torch.manual_seed(0)
    plain = resnet_tiny()
    backbone = SNRResNet(plain, stages)
    assert sorted(backbone.snr) == [f"layer{k}" for k in stages] and backbone.num_features == 128
    images = _images(4)
    stage_out = backbone.forward_stages(images)
    feature_map = backbone.forward_features(images)
    torch.testing.assert_close(stage_out.feature_map, feature_map)
    assert feature_map.shape == plain.forward_features(images).shape == (4, 128, 4, 2)  # last stride 1
    names = [
        stage_feature_name(f"layer{k}", kind)
        for k in stages
        for kind in ("normalized", "enhanced", "contaminated")
    ]
    assert list(stage_out.aux) == names
    for name, tensor in stage_out.aux.items():
        assert tensor.shape == (4, TINY_WIDTHS[name.split(".")[1]])
    if 4 in stages:  # the last block's output is the map: its pooled F~+ is the global feature
        torch.testing.assert_close(stage_out.aux["snr.layer4.enhanced"], feature_map.mean(dim=(2, 3)))
    # avgpool(IN(F)) = beta for every image: the pooled F~ carries no per-image information, so
    # d(f~_a, f~_x) = 0 and the causality loss compares the f+ / f- distances with zero
    for k in stages:
        beta = backbone.snr[f"layer{k}"].norm.bias
        torch.testing.assert_close(
            stage_out.aux[f"snr.layer{k}.normalized"], beta.expand(4, -1), atol=1e-6, rtol=0
        )


def test_snr_resnet_keeps_resnet_keys_and_works_around_any_resnet():
    torch.manual_seed(0)
    bottleneck = ResNet(tv.Bottleneck, [1, 1, 1, 1], widths=(16, 32, 64, 128))
    keys = list(bottleneck.state_dict())
    backbone = SNRResNet(bottleneck, (1, 2, 3, 4))
    assert [k for k in backbone.state_dict() if not k.startswith("snr.")] == keys
    widths = [backbone.snr[f"layer{k}"].norm.num_features for k in range(1, 5)]
    assert widths == [64, 128, 256, 512] and backbone.num_features == 512  # Bottleneck: 4 x planes
    assert backbone.no_weight_decay() == set()
    with pytest.raises(ValueError, match=r"stages must be increasing.*\[3, 1\].*model.backbone.stages"):
        SNRResNet(resnet_tiny(), (3, 1))
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        SNRResNet(resnet_tiny(), (0, 5))
    ibn = SNRResNet(resnet_tiny_ibn_a(), (1, 2, 3, 4))  # IBN-a: IN halves inside stages 1-3
    assert {k for k in ibn.state_dict() if not k.startswith("snr.")} == set(resnet_tiny_ibn_a().state_dict())
    assert ibn.forward_stages(_images(2)).aux["snr.layer3.enhanced"].shape == (2, 64)
    # the Hydra factory: ResNet keyword arguments go through, so does the ResNet's SIE refusal
    assert snr_resnet(resnet_tiny, last_stride=2).forward_features(_images(2)).shape == (2, 128, 2, 1)
    with pytest.raises(ValueError, match="model.sie=null"):
        snr_resnet(resnet_tiny, camera_embed=CameraEmbedConfig(num_cameras=3))


def test_every_parameter_gets_a_gradient_through_the_losses():
    net = _snr_net().train()
    labels = torch.arange(NUM_CLASSES).repeat_interleave(2)
    out = net(_images())
    assert out.feats[0].shape == (8, 128) and out.logits[0].shape == (8, NUM_CLASSES)
    assert len(out.aux) == 12
    inputs = ObjectiveInput(out.feats, out.logits, labels, net.branch_weights, aux=out.aux)
    loss = (
        IDLoss(0.1)(out.logits[0], labels) + TripletLoss(0.3)(out.feats[0], labels) + CausalityTerm()(inputs)
    )
    loss.backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    # the causality term alone reaches every SNR block (its IN and gate)
    net.zero_grad(set_to_none=True)
    CausalityTerm()(ObjectiveInput(out.feats, out.logits, labels, (1.0,), aux=net(_images()).aux)).backward()
    snr_no_grad = [n for n, p in net.backbone.snr.named_parameters() if p.grad is None]
    assert not snr_no_grad, snr_no_grad


def test_eval_mode_gives_no_aux_and_the_same_embedding():
    net = _snr_net().eval()
    with torch.no_grad():
        out = net(_images())
        feat = net.pooled_features(_images())
    assert dict(out.aux) == {} and out.logits == ()
    assert out.embedding.shape == (8, net.embedding_dim) == (8, 128)
    torch.testing.assert_close(out.embedding, net.global_head.neck(feat))
    net.train()
    with torch.no_grad():
        assert net(_images()).embedding.shape == out.embedding.shape


def test_torchvision_layout_checkpoint_fills_the_resnet_and_leaves_snr_new(tmp_path):
    torch.manual_seed(1)
    source = resnet_tiny()  # our ResNet's state dict has torchvision's names and layout
    torch.save(source.state_dict(), tmp_path / "resnet_tiny.pth")
    net = _snr_net()
    snr_before = {k: v.clone() for k, v in net.backbone.snr.state_dict().items()}
    assert not any(".snr." in key for key in backbone_keys(net))
    report = load_pretrained(net, tmp_path / "resnet_tiny.pth", strict=True)
    assert report.layout == "torchvision" and not report.partial and report.unexpected == []
    weights = [k for k in source.state_dict() if not k.endswith("num_batches_tracked")]
    assert report.backbone_matched == report.backbone_total == len(weights)
    loaded = net.backbone.state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    assert {k for k in report.missing if k.startswith("backbone.")} == {
        f"backbone.snr.{k}" for k in snr_before
    }  # new modules keep their initialisation
    for key, value in net.backbone.snr.state_dict().items():
        torch.testing.assert_close(value, snr_before[key])


def test_torchvision_resnet50_checkpoint_loads_strictly_into_snr_resnet50(tmp_path):
    torch.manual_seed(0)
    torch.save(tv.resnet50().state_dict(), tmp_path / "resnet50-0676ba61.pth")
    net = CNNReIDNet(snr_resnet(resnet50, last_stride=1), num_classes=751)
    report = load_pretrained(net, tmp_path / "resnet50-0676ba61.pth", strict=True)
    weights = [k for k in tv.resnet50().state_dict() if not k.endswith("num_batches_tracked")]
    assert report.backbone_matched == report.backbone_total == len(weights) - 2  # every tensor but fc.*
    assert report.unexpected == ["backbone.fc.bias", "backbone.fc.weight"]


def test_own_snr_checkpoint_round_trip_restores_the_snr_blocks(tmp_path):
    trained = _snr_net(seed=3)
    with torch.no_grad():
        trained.backbone.snr["layer2"].gate.fc2.bias.fill_(0.7)
    torch.save(
        {"state_dict": {f"net.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "last.ckpt"
    )
    fresh = _snr_net(seed=4)
    report = load_pretrained(fresh, tmp_path / "last.ckpt")
    assert report.layout == "reid" and report.missing == []
    torch.testing.assert_close(fresh.state_dict(), trained.state_dict())


def test_snr_tiny_trains_and_logs_the_causality_term(compose_config):
    """`python -m reid.run model=snr_tiny data=synthetic_tiny trainer.max_epochs=1`, driven as
    tests/test_run.py drives runs: the causality term and its per-stage L+ / L- reach the log."""
    cfg = compose_config(*TINY_RUN, "model=snr_tiny", "trainer.max_epochs=1", "test=false")
    run(cfg)
    header = (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_causality", "train/loss_id", "train/loss_tri"} <= set(header)
    stats = {f"train/causality/layer{k}/{part}" for k in range(1, 5) for part in ("plus", "minus")}
    assert stats <= set(header)
