"""Activation checkpointing of the ViT blocks (``grad_checkpointing``): the same loss and gradients as the
plain run with DropPath and dropout on, identical eval outputs, the recompute really happens (each block's
forward runs twice per training step, and far fewer activations are kept), and a run through ``reid.run``
with ``model.backbone.grad_checkpointing=true`` trains and records the flag.

Reference: timm 1.0.31 (huggingface/pytorch-image-models), ``timm/models/vision_transformer.py``
``forward_features`` / ``forward_intermediates`` run ``checkpoint(blk, x)`` per block when
``self.grad_checkpointing`` is set, and ``timm/models/_manipulate.py`` ``checkpoint`` is
``torch.utils.checkpoint.checkpoint`` with ``use_reentrant=False`` by default (read in the installed package);
we do the same per block, and unlike timm also when an attention mask (relative position bias) is given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from reid.models.jpm import JPMConfig
from reid.models.reid_net import ReIDNet
from reid.models.relative_position import RelPosBiasConfig
from reid.models.resnet import resnet_tiny, resnet_tiny_ibn_a
from reid.models.sie import CameraEmbedConfig
from reid.models.snr import snr_resnet
from reid.models.vit import VisionTransformer, vit_tiny
from reid.run import run
from tests.conftest import TINY_RUN

# 5 x 2 = 10 patches; every stochastic layer on, so a recompute with other masks would change the result
TINY = {"img_size": (32, 16), "patch_size": 8, "stride": 6, "depth": 3, "embed_dim": 48}
NOISY = {"drop_path_rate": 0.3, "drop_rate": 0.1, "attn_drop_rate": 0.1}


def _randomise_tables(model: nn.Module) -> None:
    """Relative tables start at zero (a zero mask); random ones make the masked path matter."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("table"):
                param.normal_(0.0, 0.5)


def _loss_and_grads(
    model: nn.Module, loss_of: Callable[[nn.Module], Tensor], checkpointing: bool
) -> tuple[Tensor, dict[str, Tensor]]:
    backbone = model.backbone if isinstance(model, ReIDNet) else model
    backbone.set_grad_checkpointing(checkpointing)
    model.train().zero_grad(set_to_none=True)
    torch.manual_seed(3)
    loss = loss_of(model)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _assert_same_step(model: nn.Module, loss_of: Callable[[nn.Module], Tensor]) -> None:
    plain_loss, plain_grads = _loss_and_grads(model, loss_of, checkpointing=False)
    ckpt_loss, ckpt_grads = _loss_and_grads(model, loss_of, checkpointing=True)
    # bitwise: the recompute replays the same ops on the same inputs with the same RNG state
    assert torch.equal(ckpt_loss, plain_loss)
    assert ckpt_grads.keys() == plain_grads.keys()
    assert len(plain_grads) == sum(1 for p in model.parameters() if p.requires_grad)
    unequal = [name for name, grad in plain_grads.items() if not torch.equal(ckpt_grads[name], grad)]
    assert not unequal, unequal


def _token_loss(model: nn.Module) -> Tensor:
    images = torch.randn(4, 3, 32, 16)
    return model.forward_features(images).pow(2).mean() + model(images).sum()


@pytest.mark.parametrize(
    "rel_pos_bias", [None, RelPosBiasConfig(shared=False), RelPosBiasConfig(shared=True)]
)
def test_same_loss_and_gradients_plain_and_relative_bias(rel_pos_bias):
    torch.manual_seed(0)
    model = vit_tiny(rel_pos_bias=rel_pos_bias, **TINY, **NOISY)
    _randomise_tables(model)
    _assert_same_step(model, _token_loss)


def test_same_loss_and_gradients_transreid_sie_jpm():
    """ReIDNet with SIE and JPM: the global branch's last block (``forward_block``) and the JPM branch's
    own copy of it (``jpm.py``) are checkpointed too."""
    torch.manual_seed(0)
    backbone = vit_tiny(
        camera_embed=CameraEmbedConfig(num_cameras=3, num_views=2),
        rel_pos_bias=RelPosBiasConfig(shared=False),
        **TINY,
        **NOISY,
    )
    net = ReIDNet(backbone, 7, jpm=JPMConfig(shift=2, groups=2, num_local=2))
    _randomise_tables(net)
    camids, viewids = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 0, 1, 1])

    def loss_of(model: nn.Module) -> Tensor:
        out = model(torch.randn(4, 3, 32, 16), camids, viewids)
        return sum(lg.logsumexp(1).mean() for lg in out.logits) + sum(f.pow(2).mean() for f in out.feats)

    _assert_same_step(net, loss_of)


def test_the_jpm_branch_block_runs_twice_per_step_only_with_checkpointing():
    torch.manual_seed(0)
    net = ReIDNet(vit_tiny(**TINY, **NOISY), 7, jpm=JPMConfig(shift=2, groups=2, num_local=2)).train()
    calls = []
    net.jpm.block.register_forward_pre_hook(lambda *_: calls.append(1))  # a recompute may stop early
    for checkpointing, expected in ((True, 2), (False, 1)):
        net.backbone.set_grad_checkpointing(checkpointing)
        calls.clear()
        out = net(torch.randn(4, 3, 32, 16))
        sum(lg.logsumexp(1).mean() for lg in out.logits).backward()
        assert len(calls) == expected


def test_same_loss_and_gradients_pass_part_tokens_and_local_crops():
    """A PASS student backbone (3 part tokens) on a global crop and a smaller local crop (resized grid)."""
    torch.manual_seed(0)
    model = vit_tiny(num_parts=3, **TINY, **NOISY)

    def loss_of(model: nn.Module) -> Tensor:
        global_tokens = model.forward_features(torch.randn(2, 3, 32, 16))[:, :4]
        local_tokens = model.forward_features(torch.randn(2, 3, 20, 14))[:, :4]
        return global_tokens.pow(2).mean() + local_tokens.pow(2).mean()

    _assert_same_step(model, loss_of)


def test_a_recompute_with_fresh_random_masks_would_be_caught(monkeypatch):
    """Without the RNG state restored, the recompute draws other DropPath / dropout masks: the gradients
    differ, so the equality above depends on ``preserve_rng_state`` and the stochastic layers being live."""
    import reid.models.vit as vit_module

    def forgetful(function, *args, **kwargs):
        return checkpoint(function, *args, **{**kwargs, "preserve_rng_state": False})

    torch.manual_seed(0)
    model = vit_tiny(**TINY, **NOISY)
    plain_loss, plain_grads = _loss_and_grads(model, _token_loss, checkpointing=False)
    monkeypatch.setattr(vit_module, "checkpoint", forgetful)
    ckpt_loss, ckpt_grads = _loss_and_grads(model, _token_loss, checkpointing=True)
    assert torch.equal(ckpt_loss, plain_loss)  # the forward itself draws the same masks
    assert any(not torch.equal(ckpt_grads[name], grad) for name, grad in plain_grads.items())


def _count_block_calls(model: VisionTransformer) -> list[int]:
    calls = [0] * len(model.blocks)
    for i, block in enumerate(model.blocks):
        # a pre-hook: the non-reentrant recompute may stop early, before a block's forward returns
        block.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize("rel_pos_bias", [None, RelPosBiasConfig(shared=False)])
def test_each_block_runs_twice_per_step_only_with_checkpointing(rel_pos_bias):
    torch.manual_seed(0)
    model = vit_tiny(rel_pos_bias=rel_pos_bias, grad_checkpointing=True, **TINY, **NOISY).train()
    calls = _count_block_calls(model)
    loss = _token_loss(model)  # two forwards: forward_features and forward
    assert calls == [2] * 3
    loss.backward()
    assert calls == [4] * 3  # each block recomputed once per forward it took part in
    model.set_grad_checkpointing(False)
    calls[:] = [0] * 3
    _token_loss(model).backward()
    assert calls == [2] * 3
    model.set_grad_checkpointing(True)
    calls[:] = [0] * 3
    with torch.no_grad():  # training mode but no grad: nothing to recompute
        model(torch.randn(2, 3, 32, 16))
    model.eval()
    model(torch.randn(2, 3, 32, 16)).sum().backward()  # eval with grad: plain blocks
    assert calls == [2] * 3


def _saved_bytes(model: nn.Module, images: Tensor) -> int:
    """Bytes autograd keeps for backward outside checkpointed regions (their own hooks take over inside)."""
    total = 0

    def pack(tensor: Tensor) -> Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.forward_features(images)
    return total


def test_checkpointing_keeps_far_fewer_activations():
    torch.manual_seed(0)
    model = vit_tiny(img_size=(64, 32), patch_size=8, stride=8, depth=4, **NOISY).train()
    images = torch.randn(8, 3, 64, 32)
    plain = _saved_bytes(model, images)
    model.set_grad_checkpointing(True)
    checkpointed = _saved_bytes(model, images)
    assert checkpointed < 0.25 * plain, (checkpointed, plain)


def test_eval_outputs_identical_and_state_dict_keys_unchanged():
    torch.manual_seed(0)
    plain = vit_tiny(num_parts=2, rel_pos_bias=RelPosBiasConfig(shared=False), **TINY, **NOISY)
    _randomise_tables(plain)
    checkpointed = vit_tiny(
        num_parts=2, rel_pos_bias=RelPosBiasConfig(shared=False), grad_checkpointing=True, **TINY, **NOISY
    )
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.randn(3, 3, 32, 16)
    assert torch.equal(checkpointed.eval()(images), plain.eval()(images))
    assert torch.equal(checkpointed.forward_features(images), plain.forward_features(images))


def test_grad_checkpointing_must_be_a_bool():
    with pytest.raises(TypeError, match=r"model\.backbone\.grad_checkpointing.*'yes'"):
        vit_tiny(grad_checkpointing="yes", **TINY)


def test_tiny_run_trains_with_checkpointing_and_records_the_flag(compose_config):
    cfg = compose_config(
        *TINY_RUN,
        "trainer.max_epochs=1",
        "test=false",
        "model.backbone.grad_checkpointing=true",
        "model.backbone.drop_path_rate=0.1",
    )
    run(cfg)
    out = Path(cfg.paths.output_dir)
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["backbone"]["grad_checkpointing"] is True
    header, *rows = (out / "csv" / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("train/loss_id")
    losses = [float(row.split(",")[column]) for row in rows if row.split(",")[column]]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert checkpoint["hyper_parameters"]["backbone"]["_target_"] == "reid.models.vit.vit_tiny"


@pytest.mark.parametrize("factory", [resnet_tiny, resnet_tiny_ibn_a])
def test_resnet_same_step_and_batchnorm_statistics_advance_once(factory):
    """Each of layer1..layer4 is checkpointed (timm ``ResNet.forward_features`` does the same with
    ``checkpoint_seq``); the BatchNorm running statistics after a step equal the plain step's, where a bare
    checkpoint would update them a second time in the recompute."""
    torch.manual_seed(0)
    plain = factory()
    checkpointed = factory(grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    calls = [0] * 4
    for i, name in enumerate(("layer1", "layer2", "layer3", "layer4")):
        getattr(checkpointed, name).register_forward_pre_hook(
            lambda *_, i=i: calls.__setitem__(i, calls[i] + 1)
        )
    images = torch.randn(4, 3, 64, 32)
    for model in (plain, checkpointed):
        model.train()(images).pow(2).mean().backward()
    assert calls == [2] * 4
    grads = {n: p.grad for n, p in plain.named_parameters()}
    unequal = [n for n, p in checkpointed.named_parameters() if not torch.equal(p.grad, grads[n])]
    assert not unequal, unequal
    buffers = dict(plain.named_buffers())
    assert any(n.endswith("running_mean") for n in buffers)
    unequal = [n for n, b in checkpointed.named_buffers() if not torch.equal(b, buffers[n])]
    assert not unequal, unequal
    assert checkpointed.layer1[0].bn2.num_batches_tracked.item() == 1
    assert torch.equal(checkpointed.eval()(images), plain.eval()(images))


def test_resnet_flag_is_checked_and_snr_refuses_it():
    with pytest.raises(TypeError, match=r"model\.backbone\.grad_checkpointing.*1"):
        resnet_tiny(grad_checkpointing=1)
    with pytest.raises(ValueError, match=r"SNRResNet: model\.backbone\.grad_checkpointing"):
        snr_resnet(resnet_tiny, grad_checkpointing=True)
    snr_resnet(resnet_tiny, grad_checkpointing=False)
