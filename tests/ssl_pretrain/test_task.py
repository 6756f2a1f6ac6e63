"""SSLPretrainTask: multi-resolution forward, gradients, schedules, last-layer freeze, NaN guard."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from reid.tasks.ssl_pretrain import decay_groups
from tests.ssl_pretrain.tiny import tiny_datamodule, tiny_task


def test_local_crops_get_a_resized_position_grid() -> None:
    backbone = tiny_task(2).student["backbone"].eval()
    local = backbone.forward_features(torch.randn(2, 3, 16, 8))
    assert local.shape == (2, 1 + 2 + 2, 32)  # CLS, 2 parts, 2x1 patch grid


@pytest.mark.parametrize("num_parts", [0, 1, 4])  # 2: test_resume, 3: test_experiments
def test_loss_reaches_every_student_parameter_and_no_teacher_parameter(num_parts: int) -> None:
    task = tiny_task(num_parts)
    crops = [torch.randn(2, 3, 32, 16)] * 2 + [torch.randn(2, 3, 16, 8) for _ in range(max(num_parts, 1) * 2)]
    regions = (
        torch.arange(max(num_parts, 1)).repeat_interleave(2)
        if num_parts
        else torch.zeros(2, dtype=torch.long)
    )
    losses = task.compute_loss(crops, regions, teacher_temp=0.04)
    losses["loss"].backward()
    missing = [n for n, p in task.student.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert all(p.grad is None and not p.requires_grad for p in task.teacher.parameters())
    terms = {"loss", "loss_cls", "loss_part"} if num_parts else {"loss", "loss_cls"}
    assert set(losses) == terms | {"teacher_entropy", "kl"}


@pytest.mark.parametrize("num_parts", [0, 2])
def test_collapse_check_is_the_teacher_entropy_and_the_cls_kl(num_parts: int) -> None:
    """teacher_entropy is H(softmax((t - c) / tau)) of the [CLS] head on the globals, with the centre
    before this step's update; kl = loss_cls - teacher_entropy is >= 0 (a KL divergence)."""
    task = tiny_task(num_parts)
    task.criterion.cls_centre.center.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    centre = task.criterion.cls_centre.center.clone()
    generator = torch.Generator().manual_seed(0)
    crops = [torch.randn(3, 3, 32, 16, generator=generator) for _ in range(2)]
    crops += [torch.randn(3, 3, 16, 8, generator=generator) for _ in range(2)]
    regions = torch.tensor([0, 1]) if num_parts else torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        losses = task.compute_loss(crops, regions, teacher_temp=0.07)
        cls = task.teacher["backbone"].forward_features(torch.cat(crops[:2]))[:, 0]
        probs = torch.softmax((task.teacher["head"](cls) - centre) / 0.07, dim=-1).double()
    entropy = -(probs * probs.log()).sum(-1).mean()
    assert 0.0 < float(entropy) < np.log(64)
    torch.testing.assert_close(losses["teacher_entropy"].double(), entropy, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["kl"], losses["loss_cls"] - losses["teacher_entropy"])
    assert float(losses["kl"]) > 0.0


def test_decay_groups_follow_dino() -> None:
    task = tiny_task(0)
    decay, no_decay = decay_groups(task.student)
    names = {id(p): n for n, p in task.student.named_parameters()}
    assert all(not names[id(p)].endswith(".bias") and p.ndim > 1 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and any(names[id(p)].endswith(".bias") for p in no_decay["params"])
    assert "head.last_layer.weight_g" not in {names[id(p)] for g in (decay, no_decay) for p in g["params"]}


def fit(task, paths, tmp: Path, epochs: int) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp,
    )  # fmt: skip
    trainer.fit(task, tiny_datamodule(paths[:8], task.num_parts))
    return trainer


def test_schedules_last_layer_freeze_and_teacher_ema(tmp_path: Path, image_paths) -> None:
    task = tiny_task(1, momentum_teacher=0.5)
    start = {k: v.clone() for k, v in task.state_dict().items()}
    fit(task, image_paths, tmp_path, epochs=1)  # 2 steps, all in the frozen epoch
    lr = task.schedules.lr
    assert len(lr) == 2 and lr[0] == 0.0 and lr[1] == pytest.approx(0.01 * 4 / 256)  # warmup of 1 epoch
    np.testing.assert_allclose(task.schedules.weight_decay, [0.04, 0.22])
    np.testing.assert_allclose(task.schedules.momentum, [0.5, 0.75])
    state = task.state_dict()
    assert torch.equal(state["student.head.last_layer.weight_v"], start["student.head.last_layer.weight_v"])
    assert not torch.equal(state["student.head.mlp.0.weight"], start["student.head.mlp.0.weight"])
    # two EMA steps with momenta 0.5 and 0.75: teacher = 0.375 t0 + 0.125 s1 + 0.5 s2; check one tensor moved
    assert not torch.equal(state["teacher.backbone.cls_token"], start["teacher.backbone.cls_token"])
    assert not torch.equal(state["criterion.centre_cls.center"], start["criterion.centre_cls.center"])


def test_non_finite_loss_stops_with_a_clear_message(tmp_path: Path, image_paths) -> None:
    task = tiny_task(0)
    with torch.no_grad():
        task.student["head"].mlp[0].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        fit(task, image_paths, tmp_path, epochs=1)
