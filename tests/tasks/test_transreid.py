"""The TransReID task on tiny images: built from conf/model, losses, optimiser, schedule, evaluation."""

import functools
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError
from PIL import Image

from reid.config_store import compose_option
from reid.data.records import DatasetInfo, Record, ReIDDataset
from reid.data.reid_datamodule import ReIDDataModule
from reid.evaluation import EvalConfig
from reid.losses import IDLoss, IDTerm, Objective, TripletLoss, TripletTerm
from reid.models.jpm import JPMConfig
from reid.models.sie import SIEConfig
from reid.models.vit import vit_tiny
from reid.optim import ParamGroupConfig, TimmCosineLR, build_param_groups
from reid.tasks import TransReIDTask
from reid.tasks.from_config import build_task

IMAGE_SIZE = [32, 16]  # a 2 x 1 patch grid at patch 16 / stride 16


def _task(evaluation: EvalConfig | None = None, info: DatasetInfo | None = None, **model) -> TransReIDTask:
    cfg = OmegaConf.create({"data": {"image_size": IMAGE_SIZE}})
    cfg.model = compose_option("model", "vit_tiny")
    cfg.model.backbone.depth = 2
    cfg.model.backbone.embed_dim = 48
    cfg.model.backbone.num_heads = 2
    for key, value in model.items():
        OmegaConf.update(cfg, f"model.{key}", value, force_add=True)
    torch.manual_seed(0)
    return build_task(
        cfg.model, info or DatasetInfo(num_classes=4, num_cameras=2, num_views=1), evaluation or EvalConfig()
    )


def _batch(num_ids: int = 4, per_id: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n = num_ids * per_id
    return {
        "image": torch.randn(n, 3, *IMAGE_SIZE, generator=g),
        "pid": torch.arange(num_ids).repeat_interleave(per_id),
        "camid": torch.arange(n) % 2,
        "viewid": torch.zeros(n, dtype=torch.long),
        "index": torch.arange(n),
    }


def _write_dataset(root: Path, num_ids: int = 4, per_id: int = 4) -> ReIDDataset:
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 255, size=(num_ids, 3))

    def records(split: str, pid_offset: int, count: int) -> list[Record]:
        out = []
        for pid in range(num_ids):
            for k in range(count):
                pixels = np.clip(colours[pid] + rng.normal(0, 20, size=(*IMAGE_SIZE, 3)), 0, 255)
                path = root / f"{split}_{pid}_{k}.png"
                Image.fromarray(pixels.astype(np.uint8)).save(path)
                out.append(Record(str(path), pid + pid_offset, k % 2))
        return out

    return ReIDDataset("tiny", records("train", 0, per_id), records("query", 0, 1), records("gallery", 0, 2))


def _datamodule(tmp_path: Path) -> ReIDDataModule:
    dataset = _write_dataset(tmp_path, per_id=2)
    return ReIDDataModule(
        lambda: dataset,
        image_size=IMAGE_SIZE,
        batch_size=8,
        num_instances=2,
        test_batch_size=8,
        num_workers=0,
    )


def test_training_step_is_the_branch_weighted_objective():
    task = _task(jpm={"shift": 1, "groups": 2, "num_local": 2}, sie={"camera": True, "coefficient": 3.0})
    task.train()
    batch = _batch()
    loss = task.training_step(batch, 0)
    torch.manual_seed(0)
    out = task.net(batch["image"], batch["camid"], batch["viewid"])
    assert len(out.feats) == 3 and task.net.branch_weights == (0.5, 0.25, 0.25)
    ce, tri = IDLoss(), TripletLoss(margin=None)
    expected = sum(
        w * (ce(z, batch["pid"]) + tri(f, batch["pid"]))
        for w, z, f in zip(task.net.branch_weights, out.logits, out.feats)
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    no_grad = [n for n, p in task.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_sie_settings_reach_the_backbone():
    task = _task(sie={"camera": True, "view": False, "coefficient": 2.0})
    assert task.net.backbone.sie_embed.shape == (2, 1, 48)  # 2 cameras, views off
    assert _task().net.backbone.camera_embed is None
    unknown = r"Key 'cameras' not in 'SIEConfig'\n\s+full_key: model\.sie\.cameras"
    with pytest.raises(ConfigKeyError, match=unknown):
        _task(sie={"cameras": True})


class _Recorder:
    """Stands in for the evaluator: keeps the embeddings it is given."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def update(self, embedding, pids, camids, index) -> None:
        self.seen.append(embedding)


def test_sie_init_std_and_camera_free_evaluation():
    sie = {"camera": True, "view": False, "coefficient": 3.0, "init_std": 0.0}
    assert float(_task(sie=sie).net.backbone.sie_embed.abs().max()) == 0.0
    batch = _batch()
    for at_test in (True, False):
        task = _task(sie={"camera": True, "view": False, "coefficient": 3.0}, sie_at_test=at_test).eval()
        task.evaluators = [_Recorder()]
        with torch.no_grad():
            task._evaluation_step(batch)
            cams = batch["camid"] if at_test else None
            expected = task.net(batch["image"], cams, batch["viewid"] if at_test else None).embedding
            other = task.net(batch["image"], None if at_test else batch["camid"]).embedding
        torch.testing.assert_close(task.evaluators[0].seen[0], expected)
        assert not torch.allclose(task.evaluators[0].seen[0], other)  # the camera ids do change the embedding


def test_weights_path_initialises_the_network(tmp_path):
    source = _task(jpm={"shift": 1, "groups": 2, "num_local": 2})
    with torch.no_grad():  # _task seeds its initialisation: make the source differ from a fresh task
        for param in source.parameters():
            param.add_(torch.randn_like(param))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "own.ckpt")  # Lightning layout: net.*
    loaded = _task(jpm={"shift": 1, "groups": 2, "num_local": 2}, weights=str(tmp_path / "own.ckpt"))
    torch.testing.assert_close(loaded.net.state_dict(), source.net.state_dict())


def test_flip_averages_the_embeddings():
    task = _task(evaluation=EvalConfig(flip=True)).eval()
    images = _batch()["image"]
    with torch.no_grad():
        both = task(images)
        plain = task.net(images).embedding
        mirrored = task.net(torch.flip(images, dims=[3])).embedding
    torch.testing.assert_close(both, (plain + mirrored) / 2)


def test_param_groups_follow_config():
    task = _task()  # vit_tiny: AdamW, no decay on biases, norms and tokens
    base = task.optimizer_factory.keywords["lr"]
    groups = build_param_groups(task.net, base, 0.05, task.param_group_config)
    decay = {g["weight_decay"] for g in groups}
    assert decay == {0.0, 0.05}
    exempt = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(task.net.backbone.cls_token) in exempt and id(task.net.backbone.norm.weight) in exempt
    assert id(task.net.backbone.blocks[0].attn.qkv.weight) not in exempt


def test_a_configured_loss_term_is_logged_and_its_parameters_trained():
    term = {"_target_": "tests.losses.terms.MeanCentreTerm", "weight": 0.5, "dim": 48, "lr": 0.25}
    task = _task(**{"loss.centre": term, "schedule": None, "optimizer.lr": 0.01})
    batch = _batch()
    logged = {}
    task.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    loss = task.training_step(batch, 0)
    assert set(logged) >= {"train/loss", "train/loss_id", "train/loss_tri", "train/loss_centre"}
    terms = task.objective.terms
    expected = logged["train/loss_id"] + logged["train/loss_tri"] + 0.5 * logged["train/loss_centre"]
    torch.testing.assert_close(loss, expected)
    optimizer = task.configure_optimizers()["optimizer"]
    (group,) = [g for g in optimizer.param_groups if g["name"] == "loss.centre"]
    assert group["lr"] == 0.25 and group["params"] == [terms["centre"].centre]
    loss.backward()
    optimizer.step()
    assert terms["centre"].centre.abs().sum() > 0  # the centre moved from zero


def test_a_null_term_is_left_out():
    task = _task(**{"loss.tri": None})
    assert list(task.objective.terms) == ["id"]


def test_fit_logs_losses_follows_schedule_and_evaluates(tmp_path):
    (tmp_path / "data").mkdir()
    datamodule = _datamodule(tmp_path / "data")
    task = _task(info=DatasetInfo(4, 2, 1), **{"schedule.warmup_epochs": 1})
    trainer = L.Trainer(
        max_epochs=2,
        check_val_every_n_epoch=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=datamodule)
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/loss_id", "train/loss_tri", "train/acc", "train/lr"):
        assert key in metrics, key
    for key in ("val/mAP", "val/R1", "val/R5", "val/R10", "val/mINP"):
        assert 0.0 <= float(metrics[key]) <= 100.0, key
    # 8 train images / batch 8 = 1 step per epoch: the second (last) step trained at the schedule's value
    # for epoch 1 (vit_tiny's per-step schedule, at the epoch's first and only step), each group's own
    base = task.optimizer_factory.keywords["lr"]
    for group in trainer.optimizers[0].param_groups:
        assert group["lr"] == pytest.approx(task.schedule(1.0, base * group["lr_factor"], base, 2))
    assert trainer.optimizers[0].param_groups[0]["lr"] < base
    result = trainer.test(task, datamodule=datamodule, verbose=False)[0]
    assert set(result) >= {"test/mAP", "test/R1", "test/mINP"}


def test_the_task_takes_built_objects_as_the_config_path_builds_them():
    """Issue 32 item 2: a task receives built objects. Written by hand in Python (a ``functools.partial``
    backbone and optimiser, an Objective of terms, the dataclasses of ``jpm`` / ``sie``, a schedule object)
    the task is the one ``build_task`` makes from the config holding the same values: the same tensors at
    the same seed, the same loss and parameter groups. Before, the task called ``instantiate`` on these
    arguments itself, so a partial raised InstantiationException."""
    sie = {"camera": True, "view": False, "coefficient": 3.0}
    jpm = {"shift": 1, "groups": 2, "num_local": 2}
    from_config = _task(sie=sie, jpm=jpm)
    backbone = functools.partial(vit_tiny, img_size=IMAGE_SIZE, depth=2, embed_dim=48, num_heads=2)
    torch.manual_seed(0)
    by_hand = TransReIDTask(
        data_info=DatasetInfo(num_classes=4, num_cameras=2, num_views=1),
        evaluation=EvalConfig(),
        backbone=backbone,
        loss=Objective(id=IDTerm(), tri=TripletTerm(margin=None)),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05),
        sie=SIEConfig(**sie),
        jpm=JPMConfig(**jpm),
        param_groups=ParamGroupConfig(exempt_norm_and_tokens=True),
        schedule=TimmCosineLR(warmup_epochs=1, warmup_start_factor=0.01, final_factor=0.002, per_step=True),
    )
    torch.testing.assert_close(by_hand.state_dict(), from_config.state_dict(), rtol=0, atol=0)
    batch = _batch()
    torch.testing.assert_close(by_hand.training_step(batch, 0), from_config.training_step(batch, 0))
    mine, theirs = (
        by_hand.configure_optimizers()["optimizer"],
        from_config.configure_optimizers()["optimizer"],
    )
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in mine.param_groups] == [
        (g["lr"], g["weight_decay"], len(g["params"])) for g in theirs.param_groups
    ]
