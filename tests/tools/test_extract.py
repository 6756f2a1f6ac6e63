"""`python -m reid.tools.extract`: features of a trained run's model for any images, and the loader.

The reference is the run's own evaluation path, built without ``reid.inference``: the datamodule of the
run config (its evaluation loader: query then gallery, the test transform; the unlabelled datamodule of a
Cluster Contrast run evaluates as the supervised one), the task instantiated as ``reid.run`` does with
``datamodule.info`` and the checkpoint loaded, ``task(images[, camids])``, then the L2 normalisation the
evaluator applies (``reid.evaluation.pipeline``, ``eval.normalize``).
"""

from __future__ import annotations

import csv
import functools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file

from reid.data.image_dataset import ImageReadError
from reid.data.records import DatasetInfo
from reid.evaluation import RerankConfig
from reid.inference import load_trained_model
from reid.inference.name_labels import NameLabel, label_from_name
from reid.inference.trained_model import UNSUPERVISED_DATA_INFO, data_info_from_checkpoint
from reid.tasks import TransReIDTask
from reid.tasks.cluster_contrast import ClusterContrastTask
from reid.tasks.from_config import build_task
from reid.tools.extract import main as extract
from tests.conftest import TINY_RUN
from tests.tools.trained_runs import untrained_run_folder


@functools.cache
def evaluation_features(run_dir: Path, with_camids: bool) -> tuple[dict[str, torch.Tensor], list, object]:
    """``{path: feature}`` of the run's evaluation images as its test step computes them, the records,
    and the datamodule's :class:`DatasetInfo`."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = instantiate(cfg.data)
    loader = datamodule.val_dataloader()
    task = build_task(cfg.model, datamodule.info, instantiate(cfg.eval))
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    task.load_state_dict(checkpoint["state_dict"])
    task.eval()
    records = loader.dataset.records
    found = {}
    with torch.no_grad():
        for batch in loader:
            embedding = task(batch["image"], batch["camid"]) if with_camids else task(batch["image"])
            for index, row in zip(batch["index"].tolist(), F.normalize(embedding, dim=1), strict=True):
                found[records[index].path] = row
    return found, records, datamodule.info


def read_index(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def sie_run(trained_run) -> Path:
    return trained_run("transreid")


def test_features_are_the_runs_evaluation_features_camera_free(sie_run: Path, tmp_path: Path) -> None:
    """Camera-free by default: equal (1e-6) to the test step with ``sie_at_test=false``; the index holds
    every image with the pid and 0-based camid of its record, and the metadata says the mode."""
    expected, records, info = evaluation_features(sie_run, with_camids=False)
    query = Path(records[0].path).parent
    out = tmp_path / "feats.npy"
    result = extract([str(sie_run), str(query), str(out), "--batch-size", "5", "--no-progress"])
    features = np.load(out)
    rows = read_index(tmp_path / "feats.csv")
    assert features.shape == (len(rows), 576) == (len(result.paths), 576)  # 192 x (global + 2 local)
    by_path = {r.path: r for r in records}
    assert {row["path"] for row in rows} == {r.path for r in records if Path(r.path).parent == query}
    for row, feature in zip(rows, features, strict=True):
        torch.testing.assert_close(torch.from_numpy(feature), expected[row["path"]], atol=1e-6, rtol=0)
        record = by_path[row["path"]]
        assert (int(row["pid"]), int(row["camid"]), row["name_format"]) == (
            record.pid,
            record.camid,
            "market1501",  # the registered dataset whose name format matched
        )
    meta = json.loads((tmp_path / "feats.json").read_text())
    assert meta["camera_mode"].startswith("camera-free") and meta["num_cameras"] == 3
    assert (meta["normalized"], meta["flip"], meta["feature_dim"], meta["num_images"]) == (
        True,
        False,
        576,
        len(rows),
    )
    assert meta["image_size"] == [64, 32] and meta["skipped"] == []
    assert load_trained_model(sie_run).data_info == info  # read from the checkpoint, not the data


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_extraction_is_the_float32_feature_up_to_rounding(
    sie_run: Path, tmp_path: Path, precision: str
) -> None:
    """``--precision 16-mixed`` (fp16 extraction) / ``bf16-mixed``: autocast really applies (the features
    differ from float32 by more than 1e-6) and only by rounding (below 5e-3 for fp16, 3e-2 for bf16's 8-bit
    mantissa, cosine > 0.999); float32 rows; the metadata records the precision."""
    expected, records, _ = evaluation_features(sie_run, with_camids=False)
    query = Path(records[0].path).parent
    out = tmp_path / "feats.npy"
    extract([str(sie_run), str(query), str(out), "--precision", precision, "--no-progress"])
    features = torch.from_numpy(np.load(out))
    rows = read_index(tmp_path / "feats.csv")
    reference = torch.stack([expected[row["path"]] for row in rows])
    difference = (features - reference).abs().max().item()
    assert features.dtype == torch.float32
    assert 1e-6 < difference <= (5e-3 if precision == "16-mixed" else 3e-2)
    assert F.cosine_similarity(features, reference).min() > 0.999
    assert json.loads((tmp_path / "feats.json").read_text())["precision"] == precision
    with pytest.raises(SystemExit):  # argparse: invalid choice
        extract([str(sie_run), str(query), str(out), "--precision", "16"])


@pytest.mark.parametrize(("family", "dim"), [("usl_vit", 192), ("usl_cnn", 128)])
def test_cluster_contrast_features_are_the_runs_evaluation_features(
    family: str, dim: int, trained_run, tmp_path: Path
) -> None:
    """A Cluster Contrast run (the USL demo's ViT; the UDA recipe's tiny ResNet, average pooling): equal
    (1e-6) to its test step, ``normalize(BN(feature))`` of the image alone. Rebuilt as a
    ClusterContrastTask for no identities and no cameras (the datamodule has 3; the net takes none), its
    metadata says so, and ``--camids-from-names`` is refused as for a ViT without SIE."""
    run_dir = trained_run(family)
    expected, records, info = evaluation_features(run_dir, with_camids=False)
    query = Path(records[0].path).parent
    out = tmp_path / "feats.npy"
    args = [str(run_dir), str(query), str(out), "--checkpoint", "last.ckpt", "--no-progress"]
    result = extract([*args, "--batch-size", "5"])
    features = np.load(out)
    rows = read_index(tmp_path / "feats.csv")
    assert features.shape == (len(rows), dim) == (len(result.paths), dim)
    assert {row["path"] for row in rows} == {r.path for r in records if Path(r.path).parent == query}
    for row, feature in zip(rows, features, strict=True):
        torch.testing.assert_close(torch.from_numpy(feature), expected[row["path"]], atol=1e-6, rtol=0)
    meta = json.loads((tmp_path / "feats.json").read_text())
    assert meta["camera_mode"].startswith("no SIE") and (meta["num_cameras"], meta["num_views"]) == (0, 0)
    assert (meta["normalized"], meta["feature_dim"], meta["checkpoint"]) == (
        True,
        dim,
        str(run_dir / "checkpoints" / "last.ckpt"),
    )
    model = load_trained_model(run_dir, "last.ckpt")
    assert type(model.task) is ClusterContrastTask and not model.task.training
    assert model.data_info == UNSUPERVISED_DATA_INFO == DatasetInfo(0, 1, 1)
    assert (info.num_classes, info.num_cameras) == (0, 3)
    with pytest.raises(ValueError, match="no camera SIE"):
        extract([*args, "--camids-from-names"])


def test_the_task_is_the_class_the_config_names(trained_run, tmp_path: Path) -> None:
    """Supervised or Cluster Contrast by ``model._target_``: a Cluster Contrast checkpoint under a
    supervised config (and the other way round) is refused naming the file; a config of another task, or
    of a target that is no class, is refused naming the config and the target."""
    usl, vit = trained_run("usl_vit"), trained_run("vit")
    usl_ckpt, vit_ckpt = usl / "checkpoints" / "last.ckpt", vit / "checkpoints" / "last.ckpt"
    assert type(load_trained_model(vit).task) is TransReIDTask
    no_classifier = f"{re.escape(str(usl_ckpt))} holds no ID classifier.*supervised TransReIDTask"
    with pytest.raises(ValueError, match=no_classifier):
        load_trained_model(usl_ckpt, config=vit / ".hydra" / "config.yaml")
    with pytest.raises(ValueError, match=f"{re.escape(str(vit_ckpt))} is not of the model in .*unexpected"):
        load_trained_model(vit_ckpt, config=usl / ".hydra" / "config.yaml")
    cfg = OmegaConf.load(usl / ".hydra" / "config.yaml")
    ssl, missing = "reid.tasks.ssl_pretrain.SSLPretrainTask", "reid.tasks.no_such_task.Task"
    for target, reason in [
        (ssl, f"model._target_ is {ssl}"),
        (missing, f"model._target_='{missing}' is not"),
    ]:
        cfg.model._target_ = target
        OmegaConf.save(cfg, tmp_path / "config.yaml")
        expected = (
            rf"(?s){re.escape(str(tmp_path / 'config.yaml'))}: {re.escape(reason)}.*ClusterContrastTask"
        )
        with pytest.raises(ValueError, match=expected):
            load_trained_model(usl_ckpt, config=tmp_path / "config.yaml")


def test_camids_from_names_are_the_official_evaluation(sie_run: Path, tmp_path: Path) -> None:
    """``--camids-from-names``: the test step with the records' cameras (official ``sie_at_test``), which
    differs from the camera-free features; safetensors output carries the metadata in its header."""
    expected, records, _ = evaluation_features(sie_run, with_camids=True)
    free, _, _ = evaluation_features(sie_run, with_camids=False)
    gallery = Path(records[-1].path).parent
    out = tmp_path / "feats.safetensors"
    extract([str(sie_run), str(gallery), str(out), "--camids-from-names", "--no-progress"])
    features = load_file(str(out))["features"]
    rows = read_index(tmp_path / "feats.csv")
    kept = [(row, f) for row, f in zip(rows, features, strict=True) if row["path"] in expected]
    assert len(kept) == sum(Path(r.path).parent == gallery for r in records)  # + the junk images (pid -1)
    assert {row["pid"] for row, _ in zip(rows, features, strict=True) if row["path"] not in expected} == {
        "-1"
    }
    for row, feature in kept:
        torch.testing.assert_close(feature, expected[row["path"]], atol=1e-6, rtol=0)
    assert max(float((free[row["path"]] - f).abs().max()) for row, f in kept) > 1e-3
    with safe_open(str(out), "pt") as handle:
        meta = json.loads(handle.metadata()["reid"])
    assert meta["camera_mode"].startswith("camera ids")


def test_glob_and_list_file_select_the_same_images(sie_run: Path, tmp_path: Path) -> None:
    _, records, _ = evaluation_features(sie_run, with_camids=False)
    query = Path(records[0].path).parent
    names = sorted(p.name for p in query.glob("*.jpg"))[:4]
    (tmp_path / "list.txt").write_text("# query images\n\n" + "\n".join(str(query / n) for n in names) + "\n")
    extract([str(sie_run), str(tmp_path / "list.txt"), str(tmp_path / "a.npy"), "--no-progress"])
    extract([str(sie_run), f"{query}/{names[0][:4]}*.jpg", str(tmp_path / "b.npy"), "--no-progress"])
    listed = {row["path"]: i for i, row in enumerate(read_index(tmp_path / "a.csv"))}
    globbed = read_index(tmp_path / "b.csv")
    assert [Path(p).name for p in listed] == names and globbed
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    for i, row in enumerate(globbed):
        if row["path"] in listed:
            np.testing.assert_allclose(b[i], a[listed[row["path"]]], atol=1e-6, rtol=0)


def test_a_corrupt_image_fails_by_path_unless_skipped(sie_run: Path, tmp_path: Path) -> None:
    _, records, _ = evaluation_features(sie_run, with_camids=False)
    folder = tmp_path / "images"
    folder.mkdir()
    for record in records[:3]:
        shutil.copy(record.path, folder)
    bad = folder / "0001_c1s1_000001_01.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match=str(bad)):
        extract([str(sie_run), str(folder), str(tmp_path / "f.npy"), "--no-progress"])
    extract([str(sie_run), str(folder), str(tmp_path / "f.npy"), "--skip-bad", "--no-progress"])
    meta = json.loads((tmp_path / "f.json").read_text())
    assert [s["path"] for s in meta["skipped"]] == [str(bad)] and meta["num_images"] == 3
    assert np.load(tmp_path / "f.npy").shape[0] == 3 and str(bad) not in (tmp_path / "f.csv").read_text()


def test_run_folder_errors_name_the_file(sie_run: Path, trained_run, tmp_path: Path) -> None:
    images = str(Path(evaluation_features(sie_run, with_camids=False)[1][0].path).parent)
    bare = tmp_path / "no_checkpoint"
    shutil.copytree(sie_run / ".hydra", bare / ".hydra")
    with pytest.raises(FileNotFoundError, match=r"no_checkpoint/checkpoints/last.ckpt: no checkpoint"):
        extract([str(bare), images, str(tmp_path / "f.npy")])
    with pytest.raises(FileNotFoundError, match=r"\.hydra/config.yaml: no run config"):
        extract([str(tmp_path), images, str(tmp_path / "f.npy")])
    moved = tmp_path / "elsewhere" / "model.ckpt"
    moved.parent.mkdir()
    shutil.copy(sie_run / "checkpoints" / "last.ckpt", moved)
    with pytest.raises(FileNotFoundError, match=r"elsewhere/\.hydra/config.yaml: no run config.*--config"):
        load_trained_model(moved)
    assert load_trained_model(moved, config=sie_run / ".hydra" / "config.yaml").files.checkpoint == moved
    other = trained_run("vit") / "checkpoints" / "last.ckpt"  # a ViT without SIE/JPM under the SIE config
    with pytest.raises(ValueError, match=r"is not of the model in .*config.yaml.*missing"):
        load_trained_model(other, config=sie_run / ".hydra" / "config.yaml")
    with pytest.raises(ValueError, match="no camera SIE"):
        extract([str(trained_run("vit")), images, str(tmp_path / "f.npy"), "--camids-from-names"])
    shutil.copy(next(Path(images).iterdir()), tmp_path / "person.jpg")
    with pytest.raises(ValueError, match=r"carry no camera.*person.jpg"):
        extract([str(sie_run), str(tmp_path / "person.jpg"), str(tmp_path / "f.npy"), "--camids-from-names"])
    with pytest.raises(ValueError, match=r"\.npy or \.safetensors"):
        extract([str(sie_run), images, str(tmp_path / "f.pt")])


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("0002_c1s1_000451_03.jpg", NameLabel(2, 0, "market1501")),
        ("-1_c6s2_000001_00.jpg", NameLabel(-1, 5, "market1501")),  # junk, as released
        ("0001_c2_f0046182.jpg", NameLabel(1, 1, "dukemtmc")),
        ("0776_c020_00016450_0.jpg", NameLabel(776, 19, "veri776")),
        ("0000_000_01_0303morning_0015_0.jpg", NameLabel(0, 0, "msmt17")),
        ("0002_c9s1_000451_03.jpg", None),  # Market has cameras 1..6
        ("person.jpg", None),
    ],
)
def test_labels_from_release_file_names(name: str, label: NameLabel | None) -> None:
    assert label_from_name(f"/any/folder/{name}") == label


def test_data_info_from_the_sie_table_and_classifier() -> None:
    """Cameras x views: the table of ``C * V`` rows needs ``C``; one side: its rows; no table: 1."""
    state = {
        "net.global_head.classifier.weight": torch.zeros(7, 4),
        "net.backbone.sie_embed": torch.zeros(6, 1, 4),
    }
    both = {"state_dict": state, "hyper_parameters": {"sie": {"camera": True, "view": True}}}
    with pytest.raises(ValueError, match="--num-cameras"):
        data_info_from_checkpoint(both, Path("x.ckpt"))
    with pytest.raises(ValueError, match="does not divide"):
        data_info_from_checkpoint(both, Path("x.ckpt"), num_cameras=4)
    assert data_info_from_checkpoint(both, Path("x.ckpt"), num_cameras=3) == DatasetInfo(7, 3, 2)
    cams = {"state_dict": state, "hyper_parameters": {"sie": {"camera": True, "view": False}}}
    assert data_info_from_checkpoint(cams, Path("x.ckpt")) == DatasetInfo(7, 6, 1)
    plain = {"state_dict": {"net.global_head.classifier.weight": torch.zeros(7, 4)}, "hyper_parameters": {}}
    assert data_info_from_checkpoint(plain, Path("x.ckpt")) == DatasetInfo(7, 1, 1)
    with pytest.raises(ValueError, match=r"x.ckpt holds no ID classifier"):
        data_info_from_checkpoint({"state_dict": {}, "hyper_parameters": {}}, Path("x.ckpt"))
    # a Cluster Contrast task: no identities, no side information, whatever the tensors
    assert data_info_from_checkpoint(both, Path("x.ckpt"), task=ClusterContrastTask) == DatasetInfo(0, 1, 1)


def test_a_run_saved_before_tasks_took_built_objects_still_loads(compose_config, tmp_path: Path) -> None:
    """Issue 32 item 2 changed how a model config is built, not what it holds: a BoT run saved before it
    (its center term without ``_partial_``, ``param_groups`` and ``eval.rerank`` as plain mappings without
    a ``_target_``) loads with the tensors and the evaluation it saved."""
    cfg = compose_config(*TINY_RUN, "model=bot_tiny")
    saved_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    assert saved_cfg.model.loss.center._partial_ is True
    info = DatasetInfo(num_classes=8, num_cameras=3, num_views=1)
    task = untrained_run_folder(saved_cfg, info, tmp_path / "old_bot")
    old = OmegaConf.load(tmp_path / "old_bot" / ".hydra" / "config.yaml")
    del old.model.loss.center["_partial_"]
    del old.model.param_groups["_target_"]
    old.eval.rerank = {"k1": 20, "k2": 6, "lambda_value": 0.3}
    OmegaConf.save(old, tmp_path / "old_bot" / ".hydra" / "config.yaml")
    loaded = load_trained_model(tmp_path / "old_bot")
    assert loaded.task.objective.term("center").loss.centers.shape == (8, task.net.embedding_dim)
    torch.testing.assert_close(loaded.task.state_dict(), task.state_dict(), rtol=0, atol=0)
    assert loaded.evaluation.rerank == RerankConfig(k1=20, k2=6, lambda_value=0.3)
