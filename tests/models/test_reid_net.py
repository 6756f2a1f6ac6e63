"""BNNeck heads and the ReIDNet: outputs per configuration, gradients, retrieval feature."""

import pytest
import torch

from reid.models.heads import BNNeckHead, ClsPartsNeckHead
from reid.models.jpm import JPMConfig
from reid.models.reid_net import ReIDNet
from reid.models.sie import CameraEmbedConfig
from reid.models.vit import vit_tiny

TINY = {"img_size": (32, 16), "patch_size": 8, "stride": 6, "depth": 2, "embed_dim": 48}  # 5 x 2 = 10 patches
NUM_CLASSES = 7


def _net(jpm=None, num_parts=0, feature="cls", neck_feat="before", sie=True, drop_path_rate=0.0):
    camera_embed = CameraEmbedConfig(num_cameras=3, num_views=2) if sie else None
    backbone = vit_tiny(num_parts=num_parts, camera_embed=camera_embed, drop_path_rate=drop_path_rate, **TINY)
    return ReIDNet(backbone, NUM_CLASSES, jpm=jpm, neck_feat=neck_feat, feature=feature)


def _batch(size=4):
    return torch.randn(size, 3, 32, 16), torch.tensor([0, 1, 2, 0])[:size], torch.tensor([1, 0, 1, 1])[:size]


def test_bnneck_head_values_and_frozen_bias():
    torch.manual_seed(0)
    head = BNNeckHead(16, 300)
    assert not head.bottleneck.bias.requires_grad and head.classifier.bias is None
    assert abs(head.classifier.weight.std().item() - 0.001) < 2e-4
    feat = torch.randn(8, 16) * 3 + 1
    out = head(feat)
    normed = (feat - feat.mean(0)) / torch.sqrt(feat.var(0, unbiased=False) + head.bottleneck.eps)
    torch.testing.assert_close(out.neck_feat, normed, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logits, normed @ head.classifier.weight.t(), rtol=1e-4, atol=1e-6)


def test_cls_parts_head_is_per_token_bnneck():
    head = ClsPartsNeckHead(4, num_parts=3, num_classes=5).eval()
    with torch.no_grad():
        for i, norm in enumerate([head.bottleneck, *head.part_bottlenecks]):
            norm.running_mean.fill_(float(i))
    cls, parts = torch.randn(2, 4), torch.randn(2, 3, 4)
    eps = head.bottleneck.eps
    expected = torch.cat(
        [cls / (1 + eps) ** 0.5, (parts - torch.tensor([1.0, 2, 3])[:, None]).mean(1) / (1 + eps) ** 0.5], 1
    )
    out = head(cls, parts)
    torch.testing.assert_close(out.neck_feat, expected)
    assert out.logits.shape == (2, 5)


@pytest.mark.parametrize(
    ("jpm", "num_parts", "feature", "dims"),
    [
        (None, 0, "cls", (48,)),
        (JPMConfig(num_local=4), 0, "cls", (48,) * 5),
        (JPMConfig(shift=2, groups=2, num_local=2), 3, "cls", (48,) * 3),
        (None, 3, "cls_parts", (96,)),
        (JPMConfig(num_local=2), 2, "cls_parts", (96, 48, 48)),
    ],
)
@pytest.mark.parametrize("neck_feat", ["before", "after"])
def test_output_shapes(jpm, num_parts, feature, dims, neck_feat):
    net = _net(jpm, num_parts, feature, neck_feat)
    images, camids, viewids = _batch()
    out = net.train()(images, camids, viewids)
    assert tuple(f.shape[1] for f in out.feats) == dims
    assert tuple(lg.shape for lg in out.logits) == ((4, NUM_CLASSES),) * len(dims)
    assert out.embedding.shape == (4, sum(dims)) == (4, net.embedding_dim)
    assert len(net.branch_weights) == len(dims) and sum(net.branch_weights) == pytest.approx(1.0)
    evaluated = net.eval()(images, camids, viewids)
    assert evaluated.logits == ()
    assert evaluated.embedding.shape == (4, net.embedding_dim)


def test_branch_weights():
    assert _net().branch_weights == (1.0,)
    assert _net(JPMConfig(num_local=4)).branch_weights == (0.5, 0.125, 0.125, 0.125, 0.125)


def test_every_parameter_gets_a_gradient_with_jpm_and_sie():
    torch.manual_seed(0)
    net = _net(JPMConfig(shift=2, groups=2, num_local=2), drop_path_rate=0.1).train()
    images, camids, viewids = _batch()
    out = net(images, camids, viewids)
    loss = sum(lg.logsumexp(1).mean() for lg in out.logits) + sum(f.pow(2).mean() for f in out.feats)
    loss.backward()
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
    missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {
        "global_head.bottleneck.bias",
        "local_heads.0.bottleneck.bias",
        "local_heads.1.bottleneck.bias",
    }


def test_eval_embedding_is_official_concatenation():
    torch.manual_seed(0)
    for neck_feat in ("before", "after"):
        net = _net(JPMConfig(shift=2, groups=2, num_local=2), neck_feat=neck_feat).eval()
        images, camids, viewids = _batch()
        out = net(images, camids, viewids)
        g, l1, l2 = out.feats
        if neck_feat == "after":
            g, l1, l2 = net.global_head.neck(g), net.local_heads[0].neck(l1), net.local_heads[1].neck(l2)
        torch.testing.assert_close(out.embedding, torch.cat([g, l1 / 2, l2 / 2], dim=1))


def test_global_branch_is_backbone_last_block_and_norm():
    net = _net(sie=False).eval()
    images = torch.randn(2, 3, 32, 16)
    torch.testing.assert_close(net(images).feats[0], net.backbone(images))
    parts_net = _net(num_parts=2, feature="cls_parts", sie=False).eval()
    tokens = parts_net.backbone.forward_features(images)
    expected = torch.cat([tokens[:, 0], tokens[:, 1:3].mean(1)], dim=1)
    torch.testing.assert_close(parts_net(images).embedding, expected)


def test_camera_free_mode_and_camera_dependence():
    torch.manual_seed(0)
    net = _net(JPMConfig(num_local=2)).eval()
    images, camids, viewids = _batch()
    with_cams = net(images, camids, viewids).embedding
    other_cams = net(images, (camids + 1) % 3, viewids).embedding
    assert not torch.allclose(with_cams, other_cams)
    camera_free = net(images).embedding
    assert camera_free.shape == with_cams.shape and torch.isfinite(camera_free).all()
    # camera-free tokens differ from the per-image ones by lambda * (mean table entry - S[c, v])
    grid = net.backbone.sie_embed.reshape(3, 2, -1)
    delta = net.backbone.embed(images) - net.backbone.embed(images, camids, viewids)
    expected = 3.0 * (grid.mean((0, 1)) - grid[camids, viewids])[:, None]
    torch.testing.assert_close(delta, expected.expand_as(delta), rtol=0, atol=1e-5)


def test_reset_local_branch_copies_loaded_weights():
    net = _net(JPMConfig(num_local=2))
    with torch.no_grad():
        net.backbone.blocks[-1].mlp.fc1.weight.mul_(2.0)
    net.reset_local_branch()
    assert torch.equal(net.jpm.block.mlp.fc1.weight, net.backbone.blocks[-1].mlp.fc1.weight)


def test_bad_arguments_raise():
    backbone = vit_tiny(**TINY)
    with pytest.raises(ValueError, match="neck_feat"):
        ReIDNet(backbone, 3, neck_feat="middle")
    with pytest.raises(ValueError, match="num_parts >= 1"):
        ReIDNet(backbone, 3, feature="cls_parts")
    assert "backbone.pos_embed" in ReIDNet(backbone, 3).no_weight_decay()
