"""BoT's center loss: the value, the centres' own SGD on the unweighted gradient, checkpointed state.

Official reference read with the fetch tool: michuanhaohao/reid-strong-baseline ``layers/center_loss.py``
(centres ``randn(num_classes, feat_dim)``; ``distmat = ||x||^2 + ||c||^2 - 2 x c^T`` by ``addmm_``;
``(distmat * mask).clamp(1e-12, 1e12).sum() / batch_size``), ``layers/__init__.py``
``make_loss_with_center`` (``xent + triplet + CENTER_LOSS_WEIGHT * center(feat, target)``, ``feat`` the
global feature before the BNNeck: ``modeling/baseline.py`` returns ``cls_score, global_feat``),
``solver/build.py`` ``make_optimizer_with_center`` (``SGD(center_criterion.parameters(), lr=CENTER_LR)``:
no momentum, no weight decay; the LR scheduler wraps the model's optimiser only), ``engine/trainer.py``
``create_supervised_trainer_with_center`` (``loss.backward(); optimizer.step(); param.grad *= 1 /
CENTER_LOSS_WEIGHT; optimizer_center.step()``; ``optimizer_center`` is checkpointed beside the model),
``config/defaults.py`` (``CENTER_LR 0.5``, ``CENTER_LOSS_WEIGHT 0.0005``).
"""

from __future__ import annotations

import copy
import functools

import lightning as L
import pytest
import torch
from hydra import compose
from hydra.errors import InstantiationException
from lightning.pytorch.plugins import MixedPrecision

from reid.config_store import hydra_context
from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig
from reid.losses import CenterLoss, CenterTerm, IDTerm, Objective, ObjectiveInput, TermOptimizers, TripletTerm
from reid.losses.term_optimizers import CHECKPOINT_KEY
from reid.tasks import TransReIDTask
from reid.tasks.from_config import build_task
from tests.tasks.tiny_bot import bot_batch, tiny_bot_task

CENTER = "objective.terms.center.loss.centers"


def _loss(centers: list[list[float]]) -> CenterLoss:
    loss = CenterLoss(len(centers), len(centers[0])).double()
    with torch.no_grad():
        loss.centers.copy_(torch.tensor(centers, dtype=torch.float64))
    return loss


def test_value_and_gradient_of_a_hand_computed_example():
    """Centres (0,0), (1,1), (2,0); features (1,0) of class 0 and (1,2) of class 1: squared distances 1
    and 1, so L = (1 + 1) / 2 = 1, plus the clamp quirk: the B (C - 1) = 4 masked zeros become 1e-12
    each, + 4e-12 / B = 2e-12. dL/dc_j = (2/B) sum_{i: y_i = j} (c_j - f_i): (-1, 0), (0, -1), and 0 for
    the centre no feature belongs to."""
    loss = _loss([[0, 0], [1, 1], [2, 0]])
    feats = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    value = loss(feats, torch.tensor([0, 1]))
    assert value.item() == pytest.approx(1.0 + 2e-12, abs=1e-15)
    assert value.item() != pytest.approx(1.0, abs=1e-13)  # the quirk is there, at 1e-12 scale
    value.backward()
    expected = torch.tensor([[-1.0, 0.0], [0.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(loss.centers.grad, expected)


def test_features_on_their_centres_give_num_classes_times_1e12():
    """Every entry clamped: the B C clamped values sum to B C 1e-12, / B = C 1e-12; no gradient flows
    (clamp is flat below 1e-12). Why the quirk does not matter: (C - 1) 1e-12 is 7.5e-10 for Market's
    751 identities, invisible next to a float32 loss of order 1, and it carries no gradient."""
    loss = _loss([[0, 0], [1, 1], [2, 0]])
    feats = loss.centers.detach()[[2, 0, 1]].clone().requires_grad_(True)
    value = loss(feats, torch.tensor([2, 0, 1]))
    assert value.item() == pytest.approx(3e-12, rel=1e-9)
    value.backward()
    assert torch.count_nonzero(loss.centers.grad) == 0 and torch.count_nonzero(feats.grad) == 0


def test_matches_the_per_sample_distance_to_the_own_centre():
    torch.manual_seed(0)
    loss = CenterLoss(7, 16).double()
    feats, labels = torch.randn(12, 16, dtype=torch.float64), torch.randint(0, 7, (12,))
    reference = (feats - loss.centers[labels]).pow(2).sum(1).mean() + (7 - 1) * 1e-12
    torch.testing.assert_close(loss(feats, labels), reference)
    assert loss.centers.dtype == torch.float64 and CenterLoss(751, 2048).centers.shape == (751, 2048)


def test_half_precision_features_are_computed_in_float32():
    torch.manual_seed(0)
    loss = CenterLoss(4, 512)
    feats, labels = torch.randn(8, 512) * 10, torch.arange(8) % 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(feats.bfloat16(), labels)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, loss(feats.bfloat16().float(), labels))


def _inputs(feat_dim: int = 6, branches: int = 1) -> ObjectiveInput:
    g = torch.Generator().manual_seed(0)
    feats = tuple(torch.randn(8, feat_dim, generator=g) for _ in range(branches))
    logits = tuple(torch.randn(8, 4, generator=g) for _ in range(branches))
    weights = (1.0,) if branches == 1 else (0.5, *([0.5 / (branches - 1)] * (branches - 1)))
    return ObjectiveInput(feats, logits, torch.arange(8) // 2, weights)


def test_the_term_reads_the_global_feature_and_refuses_another_width():
    term = CenterTerm(num_classes=4, feat_dim=6)
    inputs = _inputs(branches=3)
    torch.testing.assert_close(term(inputs), term.loss(inputs.feats[0], inputs.labels))
    assert term.weight == 0.0005 and term.own_optimizer() is None and not term.has_own_optimizer
    with pytest.raises(ValueError, match=r"global feature is \(8, 5\).*6-d.*model.jpm=null"):
        term(_inputs(feat_dim=5))
    with pytest.raises(ValueError, match="positive weight"):
        CenterTerm(4, 6, weight=0.0, optimizer=torch.optim.SGD)


def test_bind_model_completes_a_partial_term_with_the_model_sizes_and_names_a_wrong_one():
    """A term whose class names ``model_dims`` comes as a partial (``_partial_: true`` in the config) and
    the task completes it; order and the built terms are kept, a size the partial sets must agree."""
    objective = Objective(id=IDTerm(), center=functools.partial(CenterTerm, weight=0.0005), tri=TripletTerm())
    with pytest.raises(RuntimeError, match=r"\['center'\] still need the model's sizes"):
        objective.named_terms()
    assert objective.bind_model(num_classes=5, feat_dim=12) is objective
    assert [name for name, _ in objective.named_terms()] == ["id", "center", "tri"]
    assert objective.term("center").loss.centers.shape == (5, 12)
    agreeing = Objective(center=functools.partial(CenterTerm, feat_dim=12))
    assert agreeing.bind_model(num_classes=5, feat_dim=12).term("center").loss.feat_dim == 12
    wrong = Objective(center=functools.partial(CenterTerm, feat_dim=2048))
    with pytest.raises(ValueError, match=r"model\.loss\.center\.feat_dim=2048, but the model's is 12"):
        wrong.bind_model(num_classes=5, feat_dim=12)
    with pytest.raises(ValueError, match=r"model\.loss\.center: .*needs 'feat_dim'"):
        Objective(center=CenterTerm).bind_model(num_classes=5)
    with pytest.raises(TypeError, match=r"model\.loss\.ce: expected a loss term .* or a partial of one"):
        Objective(ce=torch.nn.CrossEntropyLoss())


def test_the_center_term_of_the_bot_config_is_completed_by_the_task():
    """conf/model/bot_r50.yaml gives the center term as a partial; built through the config path (as
    ``reid.run`` builds it) its centres are the identities x the net's width."""
    with hydra_context():
        cfg = compose("run", overrides=["experiment=bot_r50_market", "model.weights=null"])
    cfg.model.backbone._target_ = "reid.models.resnet.resnet_tiny"
    task = build_task(cfg.model, DatasetInfo(7, 2, 1), EvalConfig())
    assert task.objective.term("center").loss.centers.shape == (7, task.net.embedding_dim)


def test_term_optimizer_steps_on_the_unweighted_gradient_and_unscales_fp16():
    """The centres move by -lr dL_C/dc whatever the weight and the GradScaler scale; a scaled step with an
    inf gradient is skipped (as GradScaler skips the model's) and the gradients are cleared either way."""
    term = CenterTerm(4, 6, weight=0.0005, optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    objective = Objective(center=term)
    assert objective.param_groups(base_lr=0.1) == []  # the task's optimiser never gets the centres
    steppers = TermOptimizers(objective)
    steppers.build()
    inputs = _inputs()
    (grad,) = torch.autograd.grad(term(inputs), term.loss.centers)
    before = term.loss.centers.detach().clone()
    scale = 1024.0
    (objective(inputs).total * scale).backward()  # what backward of a GradScaler-scaled loss leaves
    steppers.step(loss_scale=scale)
    torch.testing.assert_close(term.loss.centers.detach(), before - 0.5 * grad)
    assert term.loss.centers.grad is None
    moved = term.loss.centers.detach().clone()
    (objective(inputs).total * float("inf")).backward()
    steppers.step(loss_scale=scale)
    assert torch.equal(term.loss.centers.detach(), moved) and term.loss.centers.grad is None


# ---- through TransReIDTask and Lightning ----------------------------------------------------------
def _task(num_classes: int = 4, **model) -> TransReIDTask:
    """The tiny BoT task without an lr schedule (its steps move by the base lr)."""
    return tiny_bot_task(num_classes, **{"schedule": None, **model})


def _fit(task: TransReIDTask, epochs: int, ckpt_path: str | None = None, **options) -> L.Trainer:
    """``epochs`` optimiser steps (one batch per epoch) on CPU."""
    trainer = L.Trainer(
        **options,
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    loader = torch.utils.data.DataLoader([bot_batch()], batch_size=None)
    trainer.fit(task, train_dataloaders=loader, ckpt_path=ckpt_path)
    return trainer


def test_a_training_step_moves_the_centres_by_half_their_unweighted_gradient():
    """One Lightning step of the tiny BoT: the centres' update is -CENTER_LR * dL_C/dc (not -0.5 * 0.0005
    * dL_C/dc), by their own SGD; the Adam of the model never holds them, and the model moved too."""
    task = _task()
    reference = copy.deepcopy(task).train()
    batch = bot_batch()
    out = reference.net(batch["image"])
    center = reference.objective.terms["center"]
    (grad,) = torch.autograd.grad(center.loss(out.feats[0], batch["pid"]), center.loss.centers)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    trainer = _fit(task, epochs=1)
    centers = task.objective.terms["center"].loss.centers
    assert all(p is not centers for g in trainer.optimizers[0].param_groups for p in g["params"])
    assert [type(o) for o in task.term_optimizers.optimizers.values()] == [torch.optim.SGD]
    step = centers.detach() - before[CENTER]
    torch.testing.assert_close(step, -0.5 * grad)
    assert step.abs().max() > 100 * (0.5 * 0.0005 * grad).abs().max()
    conv = "net.backbone.conv1.weight"
    assert not torch.equal(task.state_dict()[conv], before[conv])


def test_under_fp16_the_centres_are_unscaled_before_their_step():
    """16-mixed (CPU autocast + GradScaler at 65536): Lightning unscales the model's optimiser only; the
    centres' gradients are divided by the scale here, so the step is still -0.5 dL_C/dc. (That first step
    overflows in the model's fp16 gradients and GradScaler skips the model's update; the centres' own
    gradients are finite and they step: what decides their step is their own gradient.)"""
    task = _task()
    reference = copy.deepcopy(task).train()
    batch = bot_batch()
    with torch.autocast("cpu", dtype=torch.float16):
        out = reference.net(batch["image"])
    center = reference.objective.terms["center"]
    (grad,) = torch.autograd.grad(center.loss(out.feats[0], batch["pid"]), center.loss.centers)
    before = task.state_dict()[CENTER].clone()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    _fit(task, epochs=1, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    torch.testing.assert_close(task.state_dict()[CENTER] - before, -0.5 * grad)


def test_the_centre_optimizer_state_round_trips_through_a_checkpoint(tmp_path):
    """Two steps straight = one step, checkpoint, resume for the second (with momentum 0.9, so the centre
    SGD has state to lose; the official momentum-free SGD has none); dropping the state breaks it."""
    momentum = {"loss.center.optimizer.momentum": 0.9}
    straight = _task(**momentum)
    _fit(straight, epochs=2)
    first = _task(**momentum)
    trainer = _fit(first, epochs=1)
    path = tmp_path / "one_step.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    (state,) = saved[CHECKPOINT_KEY]["center"]["state"].values()
    assert state["momentum_buffer"].shape == (4, 128)
    resumed = _task(**momentum)
    _fit(resumed, epochs=2, ckpt_path=str(path))
    torch.testing.assert_close(resumed.state_dict(), straight.state_dict(), rtol=0, atol=0)
    torch.testing.assert_close(
        resumed.term_optimizers.state_dict(), straight.term_optimizers.state_dict(), rtol=0, atol=0
    )
    del saved[CHECKPOINT_KEY]
    torch.save(saved, tmp_path / "no_centre_state.ckpt")
    fresh = _task(**momentum)
    _fit(fresh, epochs=2, ckpt_path=str(tmp_path / "no_centre_state.ckpt"))
    assert not torch.equal(fresh.state_dict()[CENTER], straight.state_dict()[CENTER])


def test_a_wrong_feat_dim_in_the_config_names_the_key():
    with pytest.raises((ValueError, InstantiationException), match=r"model\.loss\.center\.feat_dim=2048"):
        _task(**{"loss.center.feat_dim": 2048})  # the tiny ResNet's feature is 128-d
    assert _task(**{"loss.center.feat_dim": 128}).objective.terms["center"].loss.feat_dim == 128


def test_a_checkpoint_of_other_identities_is_evaluated_without_its_centres():
    """Test-only evaluation on another dataset drops the per-identity centres as it drops the classifier."""
    trained, other = _task(), _task(num_classes=6)
    dropped = other.load_for_evaluation({"state_dict": trained.state_dict()}, "run.ckpt")
    assert CENTER in dropped and "net.global_head.classifier.weight" in dropped
