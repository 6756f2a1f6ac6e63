import pytest
import torch
from torch import nn

from reid.optim import ParamGroupConfig, build_param_groups


class TokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 1)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self):
        return {"cls_token"}


def _by_param(groups):
    return {id(p): (g["lr"], g["weight_decay"], g["lr_factor"]) for g in groups for p in g["params"]}


def test_transreid_style_groups():
    model = TokenNet()
    cfg = ParamGroupConfig(bias_lr_factor=2.0, weight_decay_bias=1e-4)
    lookup = _by_param(build_param_groups(model, base_lr=0.008, weight_decay=1e-4, config=cfg))
    assert lookup[id(model.fc.weight)] == (0.008, 1e-4, 1.0)
    assert lookup[id(model.fc.bias)] == (0.016, 1e-4, 2.0)
    assert lookup[id(model.norm.weight)] == (0.008, 1e-4, 1.0)  # official code decays norms too
    assert lookup[id(model.cls_token)] == (0.008, 1e-4, 1.0)
    assert id(model.frozen.weight) not in lookup


def test_exempt_norm_and_tokens():
    outer = nn.Sequential(TokenNet())  # no_weight_decay names are resolved through submodules
    inner = outer[0]
    cfg = ParamGroupConfig(bias_lr_factor=2.0, exempt_norm_and_tokens=True)
    groups = build_param_groups(outer, base_lr=0.1, weight_decay=0.05, config=cfg)
    lookup = _by_param(groups)
    assert lookup[id(inner.fc.weight)] == (0.1, 0.05, 1.0)
    assert lookup[id(inner.fc.bias)] == (0.2, 0.0, 2.0)
    assert lookup[id(inner.norm.weight)] == (0.1, 0.0, 1.0)
    assert lookup[id(inner.cls_token)] == (0.1, 0.0, 1.0)
    assert sum(len(g["params"]) for g in groups) == 5
    assert len(groups) == 3  # (1, 0.05), (2, 0), (1, 0)


def test_groups_feed_sgd():
    model = TokenNet()
    groups = build_param_groups(model, 0.01, 1e-4, ParamGroupConfig(bias_lr_factor=2.0))
    optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([0.01, 0.02])
