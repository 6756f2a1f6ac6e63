"""Several evaluation targets in one run: one dataloader and one evaluator per target (issue 16 item 4).

The same model evaluated on two (or three) targets at once must give each target exactly the metrics
it gets evaluated alone; the plain ``val/mAP`` / ``test/mAP`` names are the first target's; with one
target the names are the plain ones only (as before); a VehicleID-style target keeps its trials.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from reid.config_store import compose_option
from reid.data.records import DatasetInfo, Record, ReIDDataset, Trial
from reid.data.reid_datamodule import ReIDDataModule
from reid.evaluation import EvalConfig
from reid.tasks import TransReIDTask
from reid.tasks.from_config import build_task

IMAGE_SIZE = [32, 16]
KEYS = ("mAP", "R1", "R5", "R10", "mINP", "num_valid_queries", "num_queries")


def _task() -> TransReIDTask:
    model = compose_option("model", "vit_tiny")
    model.backbone.depth, model.backbone.embed_dim, model.backbone.num_heads = 1, 32, 2
    cfg = OmegaConf.create({"data": {"image_size": IMAGE_SIZE}, "model": model})
    torch.manual_seed(0)
    info = DatasetInfo(num_classes=4, num_cameras=3, num_views=1)
    return build_task(cfg.model, info, EvalConfig()).eval()


def _domain(root: Path, name: str, seed: int, num_ids: int = 4, per_id: int = 3) -> ReIDDataset:
    """Noisy per-identity colours: one query and ``per_id - 1`` gallery images per identity, in 2 cameras."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 225, size=(num_ids, 3))
    query, gallery = [], []
    for pid in range(num_ids):
        for k in range(per_id):
            pixels = np.clip(colours[pid] + rng.normal(0, 40, size=(*IMAGE_SIZE, 3)), 0, 255)
            path = root / f"{name}_{pid}_{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            (query if k == 0 else gallery).append(Record(str(path), 100 + pid, min(k, 2)))
    return ReIDDataset(name, [], query, gallery)


def _trials_domain(root: Path) -> ReIDDataset:
    """VehicleID-style: every test image in ``query``, two seeded re-splits, no gallery split."""
    data = _domain(root, "vehicles", seed=7)  # images 0-3: one per identity; 4-11: two per identity
    images = [*data.query, *data.gallery]
    trials = []
    for gallery in ([0, 1, 2, 3], [4, 6, 8, 10]):  # one image per identity
        query = [i for i in range(len(images)) if i not in gallery]
        trials.append(Trial(np.array(query), np.array(gallery)))
    return ReIDDataset("vehicles", [], images, [], trials=tuple(trials))


def _evaluate(tmp_path: Path, targets: dict[str, ReIDDataset], stage: str) -> dict[str, float]:
    train = _domain(tmp_path / "train", "train", seed=0)
    train = ReIDDataset(
        "train", [Record(r.path, r.pid - 100, r.camid) for r in train.query + train.gallery], [], []
    )
    datamodule = ReIDDataModule(
        lambda: train,
        test_datasets={name: (lambda data=data: data) for name, data in targets.items()},
        image_size=IMAGE_SIZE,
        batch_size=4,
        num_instances=2,
        test_batch_size=5,  # several batches per loader
        num_workers=0,
    )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    run = trainer.validate if stage == "val" else trainer.test
    results = run(_task(), datamodule=datamodule, verbose=False)
    assert len(results) == len(targets)  # one result per dataloader, each holding every target's metrics
    assert all(result == results[0] for result in results)
    return results[0]


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> dict[str, ReIDDataset]:
    root = tmp_path_factory.mktemp("targets")
    return {
        "duke": _domain(root, "duke", seed=1),
        "msmt": _domain(root, "msmt", seed=2),
        "veh": _trials_domain(root),
    }


@pytest.mark.parametrize("stage", ["val", "test"])
def test_each_target_scores_as_when_evaluated_alone(tmp_path, domains, stage):
    together = _evaluate(tmp_path, domains, stage)
    for name, data in domains.items():
        alone = _evaluate(tmp_path, {name: data}, stage)
        assert set(alone) == {f"{stage}/{key}" for key in KEYS}  # one target: the plain names only
        for key in KEYS:
            assert together[f"{stage}/{name}/{key}"] == pytest.approx(alone[f"{stage}/{key}"], abs=1e-6), key
    for key in KEYS:  # the plain names are the first target's
        assert together[f"{stage}/{key}"] == together[f"{stage}/duke/{key}"]
    assert set(together) == {f"{stage}/{k}" for k in KEYS} | {
        f"{stage}/{n}/{k}" for n in domains for k in KEYS
    }
    assert together[f"{stage}/veh/num_queries"] == 2 * (12 - 4)  # summed over the two trials


def test_the_metrics_differ_between_targets(tmp_path, domains):
    """Not a vacuous equality: the targets are different data, so their scores differ."""
    together = _evaluate(tmp_path, {"duke": domains["duke"], "msmt": domains["msmt"]}, "val")
    assert together["val/duke/mAP"] != together["val/msmt/mAP"]
    assert set(together) == {f"val/{k}" for k in KEYS} | {
        f"val/{n}/{k}" for n in ("duke", "msmt") for k in KEYS
    }
