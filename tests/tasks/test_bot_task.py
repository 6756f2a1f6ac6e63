"""The BoT CNN baseline through TransReIDTask: built from conf/model/bot_tiny.yaml via model.net."""

import pytest
import torch
import torchvision
from hydra.errors import InstantiationException

from reid.losses import IDLoss, TripletLoss
from reid.models.cnn_reid_net import CNNReIDNet
from reid.models.pooling import GeneralizedMeanPool
from reid.optim import build_param_groups
from tests.tasks.tiny_bot import bot_batch
from tests.tasks.tiny_bot import tiny_bot_task as _task


def test_model_net_builds_a_cnn_reid_net_and_trains_a_step():
    task = _task().train()
    assert isinstance(task.net, CNNReIDNet) and task.hparams["net"]["_target_"].endswith("CNNReIDNet")
    batch = bot_batch()
    loss = task.training_step(batch, 0)
    torch.manual_seed(0)
    out = task.net(batch["image"])
    expected = IDLoss(0.1)(out.logits[0], batch["pid"]) + TripletLoss(margin=0.3)(out.feats[0], batch["pid"])
    expected = expected + 0.0005 * task.objective.terms["center"].loss(out.feats[0], batch["pid"])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    no_grad = [n for n, p in task.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_bot_param_groups_decay_everything_at_one_lr():
    task = _task()
    groups = build_param_groups(task.net, 3.5e-4, 5e-4, task.param_group_config)
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(3.5e-4, 5e-4)]
    assert task.optimizer_factory.func is torch.optim.Adam


def test_gem_pooling_by_target():
    task = _task(**{"net.pool": {"_target_": "reid.models.pooling.GeneralizedMeanPool", "p": 3.0}})
    assert isinstance(task.net.pool, GeneralizedMeanPool) and task.net.pool.p.item() == 3.0


def test_sie_and_jpm_with_a_cnn_are_refused():
    with pytest.raises((ValueError, InstantiationException), match="model.sie=null"):
        _task(sie={"camera": True, "view": False, "coefficient": 3.0})
    with pytest.raises((ValueError, InstantiationException), match="model.jpm=null"):
        _task(jpm={"shift": 5, "groups": 2, "num_local": 4})


def test_weights_path_loads_a_torchvision_layout(tmp_path):
    torch.manual_seed(3)
    source = _task().net.backbone
    state = {**source.state_dict(), "fc.weight": torch.randn(1000, 128), "fc.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "tiny_imagenet.pth")
    task = _task(weights=str(tmp_path / "tiny_imagenet.pth"))
    torch.testing.assert_close(task.net.backbone.state_dict(), source.state_dict())
    assert torchvision.models.resnet.BasicBlock in {type(m) for m in task.net.backbone.modules()}
