"""CNNReIDNet (BoT: ResNet -> pooling -> BNNeck) and the pooling layers."""

import pytest
import torch
from torch import nn

from reid.losses import IDLoss, TripletLoss
from reid.models import ReIDNet
from reid.models.cnn_reid_net import CNNReIDNet
from reid.models.jpm import JPMConfig
from reid.models.pooling import GeneralizedMeanPool, GlobalAvgPool
from reid.models.reid_net import ReIDModelOutput
from reid.models.resnet import resnet_tiny

NUM_CLASSES = 4


def _net(**kw) -> CNNReIDNet:
    torch.manual_seed(0)
    return CNNReIDNet(resnet_tiny(), NUM_CLASSES, **kw)


def _images(n: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, 64, 32, generator=torch.Generator().manual_seed(1))


def test_gem_is_average_pooling_at_p1_and_max_pooling_in_the_limit():
    x = 0.5 + 0.5 * torch.rand(2, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(GeneralizedMeanPool(p=1.0, learnable=False).double()(x), x.mean(dim=(2, 3)))
    torch.testing.assert_close(GlobalAvgPool()(x), x.mean(dim=(2, 3)))
    maxima = x.amax(dim=(2, 3))
    gaps = [(maxima - GeneralizedMeanPool(p=p).double()(x)).abs().max().item() for p in (3, 30, 3000)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 2e-3  # (1 / 20 positions)^(1 / p) -> 1
    # the power mean is monotone in p: between the average (p=1) and the maximum
    gem3 = GeneralizedMeanPool(p=3.0).double()(x)
    assert torch.all(gem3 >= x.mean(dim=(2, 3))) and torch.all(gem3 <= maxima)


def test_gem_p_is_learned_or_fixed():
    learned, fixed = GeneralizedMeanPool(p=3.0), GeneralizedMeanPool(p=3.0, learnable=False)
    assert [n for n, _ in learned.named_parameters()] == ["p"]
    assert list(fixed.parameters()) == [] and "p" in dict(fixed.named_buffers())
    learned(torch.rand(2, 3, 2, 2)).sum().backward()
    assert learned.p.grad is not None
    with pytest.raises(ValueError, match="positive"):
        GeneralizedMeanPool(p=0.0)


def test_training_output_and_every_parameter_gets_a_gradient():
    net = _net(pool=GeneralizedMeanPool()).train()
    labels = torch.arange(NUM_CLASSES).repeat_interleave(2)
    out = net(_images(), torch.zeros(8, dtype=torch.long))
    assert isinstance(out, ReIDModelOutput)
    assert len(out.feats) == 1 and out.feats[0].shape == (8, 128)
    assert len(out.logits) == 1 and out.logits[0].shape == (8, NUM_CLASSES)
    assert out.embedding.shape == (8, net.embedding_dim) and net.branch_weights == (1.0,)
    loss = IDLoss(0.1)(out.logits[0], labels) + TripletLoss(margin=0.3)(out.feats[0], labels)
    loss.backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert frozen == ["global_head.bottleneck.bias"]  # the BNNeck shift, frozen at 0
    assert net.no_weight_decay() == set()


def test_eval_embedding_is_the_feature_after_or_before_the_bnneck():
    images = _images()
    after, before = _net().eval(), _net(neck_feat="before").eval()
    before.load_state_dict(after.state_dict())
    with torch.no_grad():
        out_after, out_before = after(images), before(images)
        feat = after.pooled_features(images)
        torch.testing.assert_close(out_after.embedding, after.global_head.bottleneck(feat))
    assert out_after.logits == () and out_before.logits == ()
    torch.testing.assert_close(out_before.embedding, feat)
    torch.testing.assert_close(out_after.feats[0], feat)


def test_vit_only_options_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="model.jpm"):
        _net(jpm=JPMConfig(shift=5, groups=2, num_local=4))
    with pytest.raises(ValueError, match="cls_parts"):
        _net(feature="cls_parts")
    with pytest.raises(ValueError, match="neck_feat"):
        _net(neck_feat="middle")
    with pytest.raises(TypeError, match="CNNReIDNet"):
        ReIDNet(resnet_tiny(), NUM_CLASSES)  # the ViT net with a CNN backbone points to CNNReIDNet


class _ProbeStages(nn.Module):
    """A backbone with the ``forward_stages`` protocol: the map and one named auxiliary tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = resnet_tiny()
        self.num_features = self.resnet.num_features
        self.no_weight_decay = self.resnet.no_weight_decay

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.resnet.forward_features(images)

    def forward_stages(self, images: torch.Tensor):
        feature_map = self.forward_features(images)
        return feature_map, {"probe": 2.0 * feature_map.amax(dim=(2, 3))}


def test_plain_backbone_gives_no_aux_and_the_same_training_features():
    net = _net().train()
    images = _images()
    out = net(images)
    assert dict(out.aux) == {}
    torch.testing.assert_close(out.feats[0], net.pooled_features(images), rtol=0, atol=0)


def test_forward_stages_aux_is_passed_on_in_training_only():
    torch.manual_seed(0)
    net = CNNReIDNet(_ProbeStages(), NUM_CLASSES).train()
    images = _images()
    out = net(images)
    assert list(out.aux) == ["probe"]
    feature_map = net.backbone.forward_features(images)
    torch.testing.assert_close(out.aux["probe"], 2.0 * feature_map.amax(dim=(2, 3)))
    torch.testing.assert_close(out.feats[0], feature_map.mean(dim=(2, 3)))
    with pytest.raises(TypeError):
        out.aux["other"] = out.feats[0]  # read-only, like ReIDNet's aux
    net.eval()
    with torch.no_grad():
        assert dict(net(images).aux) == {}
