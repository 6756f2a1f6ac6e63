"""The bad-input corpus of issue 15 as a test module: one case per bad input, each asserting that the
error names the file, key or value it is about (and never advises ``weights_only=False``).

Items covered: 4 (logs and results survive: run folders, reruns, synthetic trees), 5 (weights never
half-load silently: files that fill too little of the backbone, unreadable files, ``model.weights=''``,
``ckpt_path`` that is not a run's checkpoint) and 8 (config values of the wrong type or range, refused by
``reid.run`` before anything is built; a full disk while saving; DDP on CPU), 6 (data checked at setup:
unreadable images by path, 16-bit, EXIF, sub-patch images, folders named like images, K above an
identity's images, the header check's cost) and 9 (a wrong ``paths.data_dir``, a test-only checkpoint of
another model). Items 7 and 9's end-to-end runs are in ``tests/test_run.py``. Cases use tiny tensors and
models, and no training run.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from safetensors.torch import save_file

from reid.config import CONFIG_DIR
from reid.config_store import compose_option
from reid.data.records import DatasetInfo
from reid.data.synthetic import generate_market_tree
from reid.data.synthetic.luperson_tree import generate_luperson_tree
from reid.evaluation import EvalConfig
from reid.models import ReIDNet, vit_tiny
from reid.models.weights import load_pretrained
from reid.run import check_output_dir, check_run_checkpoint
from reid.tasks.from_config import build_task

DIM = 24
Case = Callable[[Path], tuple[Callable[[], object], type[BaseException], list[str]]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(build: Case) -> Case:
        CASES[name] = build
        return build

    return register


def _vit(depth: int = 2, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return vit_tiny(img_size=(32, 16), embed_dim=DIM, num_heads=2, depth=depth, **kw)


def _net(depth: int = 2, **kw) -> ReIDNet:
    return ReIDNet(_vit(depth, **kw), num_classes=3)


def _load(path: Path, model: torch.nn.Module | None = None) -> Callable[[], object]:
    return lambda: load_pretrained(_net() if model is None else model, path)


# ---- item 5: weights that fill less than the backbone ------------------------------------------
@case("torchvision ResNet into the ViT")
def _resnet_into_vit(tmp: Path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp / "resnet18.pth")
    return (
        _load(tmp / "resnet18.pth"),
        ValueError,
        ["resnet18.pth", "layout torchvision", "fills 0 of", "ResNet"],
    )


@case("empty dict")
def _empty_dict(tmp: Path):
    torch.save({}, tmp / "empty.pth")
    return (
        _load(tmp / "empty.pth"),
        ValueError,
        ["empty.pth", "fills 0 of", "holds no tensors", "weights_strict"],
    )


@case("our pretraining last.ckpt as model.weights")
def _pretraining_ckpt(tmp: Path):
    state = {
        f"{net}.backbone.{k}": v for net in ("student", "teacher") for k, v in _vit().state_dict().items()
    }
    torch.save({"state_dict": state, "epoch": 3, "pytorch-lightning_version": "2.6.6"}, tmp / "last.ckpt")
    return _load(tmp / "last.ckpt"), ValueError, ["last.ckpt", "fills 0 of", "reid.tools.export_backbone"]


@case("layout misdetected as timm")
def _misdetected(tmp: Path):
    hf = {f"vit.encoder.layer.{i}.attention.query.weight": torch.zeros(DIM, DIM) for i in range(2)}
    torch.save(hf, tmp / "hf_vit.bin")
    return (
        _load(tmp / "hf_vit.bin"),
        ValueError,
        ["hf_vit.bin", "layout timm", "'reid' layout", "export_backbone"],
    )


@case("shallower checkpoint (depth 1 into depth 2)")
def _shallower(tmp: Path):
    torch.save(_vit(depth=1).state_dict(), tmp / "depth1.pth")
    return _load(tmp / "depth1.pth"), ValueError, ["depth1.pth", "of", "blocks.1.", "weights_strict=false"]


@case("width differs")
def _width(tmp: Path):
    torch.manual_seed(0)
    wide = vit_tiny(img_size=(32, 16), embed_dim=32, num_heads=2, depth=2)
    torch.save(wide.state_dict(), tmp / "wide.pth")
    return _load(tmp / "wide.pth"), ValueError, ["wide.pth", "width differs: checkpoint 32, model 24"]


@case("model.weights='' (empty string)")
def _empty_weights_key(tmp: Path):
    return lambda: _task(weights=""), ValueError, ["model.weights=''", "model.weights=null"]


@case("partial file through the task without weights_strict=false")
def _task_strict(tmp: Path):
    state = {k: v for k, v in _vit().state_dict().items() if not k.startswith("blocks.1.")}
    torch.save(state, tmp / "half.pth")
    expected = ["half.pth", "fills 19 of 31", "model.weights_strict=false"]
    return lambda: _task(weights=str(tmp / "half.pth")), ValueError, expected


def _task(**model):

    cfg = OmegaConf.create({"data": {"image_size": [32, 16]}})
    cfg.model = compose_option("model", "vit_tiny")
    cfg.model.backbone.update(depth=2, embed_dim=DIM, num_heads=2)
    for key, value in model.items():
        OmegaConf.update(cfg, f"model.{key}", value, force_add=True)
    info = DatasetInfo(num_classes=3, num_cameras=2, num_views=1)
    return build_task(cfg.model, info, EvalConfig())


# ---- item 5: files that cannot be read --------------------------------------------------------
def _write(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def _saved_bytes(obj) -> bytes:
    buffer = __import__("io").BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@case("zero-byte file")
def _zero(tmp: Path):
    return _load(_write(tmp, "zero.pth", b"")), ValueError, ["zero.pth", "empty (0 bytes)"]


@case("truncated zip archive")
def _truncated(tmp: Path):
    data = _saved_bytes(_vit().state_dict())
    path = _write(tmp, "cut.pth", data[: len(data) // 2])
    return _load(path), ValueError, ["cut.pth", "truncated zip archive", f"{len(data) // 2} bytes"]


@case("corrupt zip archive")
def _corrupt(tmp: Path):
    with zipfile.ZipFile(tmp / "bad.pth", "w") as archive:
        archive.writestr("bad/data.pkl", b"\x80\x02not a pickle")
    return _load(tmp / "bad.pth"), ValueError, ["bad.pth", "corrupt zip archive"]


@case("Git LFS pointer")
def _lfs(tmp: Path):
    path = _write(tmp, "lfs.pth", b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n")
    return _load(path), ValueError, ["lfs.pth", "Git LFS pointer", "git lfs pull"]


@case("HTML page saved as weights")
def _html(tmp: Path):
    path = _write(tmp, "page.pth", b"<!DOCTYPE html><html><body>Sign in</body></html>")
    return _load(path), ValueError, ["page.pth", "HTML"]


@case("other text file")
def _text(tmp: Path):
    return (
        _load(_write(tmp, "notes.pth", b"lr=0.1\nepochs=3\n")),
        ValueError,
        ["notes.pth", "text file", "lr=0.1"],
    )


@case("pickle holding another object")
def _object(tmp: Path):
    torch.save({"model": _vit().state_dict(), "meta": pickle.loads(pickle.dumps(Path("x")))}, tmp / "obj.pth")
    return _load(tmp / "obj.pth"), ValueError, ["obj.pth", "asks for the global pathlib", "re-save"]


@case("legacy (non-zip) pickle holding an object")
def _legacy(tmp: Path):
    torch.save({"a": torch.zeros(1), "o": object()}, tmp / "old.pth", _use_new_zipfile_serialization=False)
    return _load(tmp / "old.pth"), ValueError, ["old.pth", "asks for the global object"]


@case("random bytes")
def _random(tmp: Path):
    path = _write(tmp, "noise.pth", bytes(np.random.default_rng(0).integers(1, 256, 64, dtype=np.uint8)))
    return _load(path), ValueError, ["noise.pth", "not a checkpoint"]


@case("corrupt safetensors")
def _bad_safetensors(tmp: Path):
    save_file(dict(_vit().state_dict()), str(tmp / "w.safetensors"))
    data = (tmp / "w.safetensors").read_bytes()
    return (
        _load(_write(tmp, "w.safetensors", data[:100])),
        ValueError,
        ["w.safetensors", "safetensors", "100 bytes"],
    )


@case("corrupt npz")
def _bad_npz(tmp: Path):
    return _load(_write(tmp, "ViT-B_16.npz", b"PK\x03\x04 truncated")), ValueError, ["ViT-B_16.npz", ".npz"]


@case("npz with pickled objects")
def _object_npz(tmp: Path):
    np.savez(tmp / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    return _load(tmp / "obj.npz"), ValueError, ["obj.npz", "pickled Python objects"]


@case("a list instead of a dict")
def _list(tmp: Path):
    torch.save([torch.zeros(1)], tmp / "list.pth")
    return _load(tmp / "list.pth"), ValueError, ["list.pth", "holds a list"]


# ---- item 5: ckpt_path that is not a run's checkpoint -----------------------------------------
@case("ckpt_path is a plain state dict")
def _plain_ckpt(tmp: Path):
    torch.save(_net().state_dict(), tmp / "weights.pth")
    path = str(tmp / "weights.pth")
    return lambda: check_run_checkpoint(path, _net(), True), ValueError, [path, f"model.weights={path}"]


@case("ckpt_path is another experiment's checkpoint")
def _other_experiment(tmp: Path):
    other = {f"student.backbone.{k}": v for k, v in _vit().state_dict().items()}
    torch.save({"state_dict": other, "pytorch-lightning_version": "2.6.6", "loops": {}}, tmp / "ssl.ckpt")
    path = str(tmp / "ssl.ckpt")
    expected = [path, "another experiment", "missing (e.g. ", f"model.weights={path}"]
    return lambda: check_run_checkpoint(path, _LightningNet(), True), ValueError, expected


class _LightningNet(torch.nn.Module):
    """The key names of a supervised task (``net.*``)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _net()


# ---- item 4: results and synthetic trees survive ----------------------------------------------
def _run_folder(tmp: Path, holds: str) -> Path:
    out = tmp / "outputs" / "reid" / "2026-01-01_00-00-00"
    (out / holds).parent.mkdir(parents=True, exist_ok=True)
    (out / holds).write_text("{}")
    return out


@pytest.mark.parametrize("holds", ["results.json", "checkpoints/last.ckpt", "csv/metrics.csv"])
def test_rerun_into_a_folder_with_results_refuses(tmp_path, holds):
    out = _run_folder(tmp_path, holds)
    with pytest.raises(FileExistsError) as error:
        check_output_dir(out, ckpt_path=None, overwrite=False)
    message = str(error.value)
    assert str(out) in message and f"hydra.run.dir={out} ckpt_path=last" in message
    assert "overwrite=true" in message and holds.split("/")[0] in message
    check_output_dir(out, ckpt_path="last", overwrite=False)  # resuming writes there on purpose
    assert (out / holds).exists()


@case("synthetic Market tree holding a user's file")
def _market_tree(tmp: Path):
    spec = {"num_train_ids": 2, "num_test_ids": 2, "num_cameras": 2, "images_per_id": 4}
    spec |= {"num_distractors": 2, "num_junk": 1}
    root = generate_market_tree(tmp / "syn", **spec)
    (root / "notes.md").write_text("mine")
    return lambda: generate_market_tree(root, **{**spec, "seed": 1}), FileExistsError, [str(root), "notes.md"]


@case("synthetic LUPerson tree holding a user's image")
def _luperson_tree(tmp: Path):
    spec = {"num_images": 6, "num_scenes": 2, "num_identities": 3}
    root = generate_luperson_tree(tmp / "lup", **spec)
    (root / "scene_00000" / "photo.jpg").write_bytes(b"mine")
    expected = [str(root), "scene_00000/photo.jpg"]
    return lambda: generate_luperson_tree(root, **{**spec, "seed": 1}), FileExistsError, expected


# ---- item 8: config errors name the key -------------------------------------------------------
def _composed(tmp: Path, *overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[f"paths.data_dir={tmp / 'data'}", "data=synthetic_tiny", *overrides])
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / "run")
    return cfg


_COMPOSE_ERRORS = {  # override -> what Hydra's message (with its cause) must say: the group schemas
    "data.batch_size=abc": ["data.batch_size", "'abc' of type 'str' could not be converted to Integer"],
    "trainer.max_epochs=abc": ["trainer.max_epochs", "'abc' of type 'str' could not be converted to Integer"],
    "seed=abc": ["seed", "'abc' of type 'str' could not be converted to Integer"],
    "data.image_size=[64,abc]": ["data.image_size", "'abc' of type 'str' could not be converted to Integer"],
    # Cluster Contrast has no ID classifier: model/classifier=arcface is a key its task does not take
    "model/classifier=arcface": ["model.classifier", "Key 'classifier' not in 'ClusterContrastTask'"],
}
_RANGE_ERRORS = {  # override -> the constructor's message, which names the key and the value
    # `+` force-adds a key past the schema: reid.run checks the group's keys before building anything
    "+model.neck_feats=after": "model.neck_feats: TransReIDTask takes no 'neck_feats' (its keys: backbone, ",
    "data.batch_size=0": "data.batch_size=0: expected a positive integer (images per step)",
    "data.test_batch_size=0": "data.test_batch_size=0: expected a positive integer (images per step)",
    "data.num_instances=-2": "data.num_instances=-2: expected a positive integer",
    "data.image_size=[64]": "data.image_size=[64]: expected [height, width]: two positive integers",
    "model.optimizer.lr=-0.1": "model.optimizer.lr=-0.1: expected a positive number",
    "trainer.max_epochs=-3": "`max_epochs` must be a non-negative integer or -1. You passed in -3",
}


def _compose_error(override: str) -> Case:
    def build(tmp: Path):
        from hydra.errors import ConfigCompositionException

        extra = (
            ("model=cluster_contrast_tiny", "data=usl_synthetic_tiny")
            if override.startswith("model/")
            else ()
        )
        return lambda: _composed(tmp, *extra, override), ConfigCompositionException, _COMPOSE_ERRORS[override]

    return build


def _range_error(override: str) -> Case:
    def build(tmp: Path):
        from reid.run import run

        cfg = _composed(tmp, override)
        return lambda: run(cfg), Exception, [_RANGE_ERRORS[override]]

    return build


for _override in _COMPOSE_ERRORS:
    case(f"config {_override}")(_compose_error(_override))
for _override in _RANGE_ERRORS:
    case(f"config {_override}")(_range_error(_override))


@case("disk full while saving a checkpoint")
def _disk_full(tmp: Path):
    """A real ENOSPC from the kernel: the temporary file's descriptor is /dev/full."""
    from unittest import mock

    from reid.training import checkpoint_io

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux)")
    target = tmp / "checkpoints" / "last.ckpt"

    def full_disk(**kw):
        return os.open("/dev/full", os.O_WRONLY), str(tmp / "checkpoints" / ".last.ckpt.x.tmp")

    def save():
        with mock.patch.object(checkpoint_io.tempfile, "mkstemp", full_disk):
            checkpoint_io.AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(100_000)}, target)

    expected = [str(target), "No space left on device (ENOSPC)", "MiB free in", "model_checkpoint.dirpath"]
    return save, checkpoint_io.CheckpointWriteError, expected


def test_cpu_ddp_synchronises_batchnorm_with_the_gloo_layer_and_says_so(tmp_path, caplog):
    from reid.config_checks import check_config

    cfg = _composed(tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true")
    assert cfg.trainer.sync_batchnorm is True
    with caplog.at_level("INFO", logger="reid"):
        check_config(cfg)
    assert cfg.trainer.sync_batchnorm is False  # torch's SyncBatchNorm would fail at the first forward
    assert cfg.trainer.plugins[-1]._target_ == "reid.training.sync_batchnorm.GlobalBatchNormSync"
    assert "GlobalBatchNormSync" in caplog.text and "CPU" in caplog.text
    gpu = _composed(tmp_path, "trainer=ddp")  # accelerator=gpu: left as configured
    check_config(gpu)
    assert gpu.trainer.sync_batchnorm is True


# ---- item 6: data checked before training ------------------------------------------------------
_TINY_TREE = {"num_train_ids": 4, "num_test_ids": 3, "num_cameras": 2, "images_per_id": 4}
_TINY_TREE |= {"num_distractors": 2, "num_junk": 1}


def _tree(tmp: Path) -> Path:
    return generate_market_tree(tmp / "Market-1501-v15.09.15", **_TINY_TREE)


def _datamodule(root: Path, **kw):
    from reid.data.datasets import load_market1501
    from reid.data.reid_datamodule import ReIDDataModule

    return ReIDDataModule(lambda: load_market1501(root), image_size=(32, 16), num_workers=0, **kw)


def _spoil(split: str, data: bytes) -> Case:
    """Overwrite the first image of ``split`` with ``data``: setup (before any step) names the file."""

    def build(tmp: Path):
        from reid.data.image_dataset import ImageReadError

        root = _tree(tmp)
        path = sorted((root / split).glob("*.jpg"))[-1]  # [0] may be junk, which the parser drops
        path.write_bytes(data)
        return lambda: _datamodule(root).setup(), ImageReadError, [str(path), "cannot be read", "1 of "]

    return build


case("zero-byte query image")(_spoil("query", b""))
case("text file named .jpg in the gallery")(_spoil("bounding_box_test", b"id,cam\n1,2\n"))
case("corrupt header in the train split")(_spoil("bounding_box_train", b"\xff\xd8\xff\x00garbage" * 4))


@case("folder named like an image in a split")
def _image_folder(tmp: Path):
    from reid.data.datasets import DatasetFormatError

    root = _tree(tmp)
    folder = root / "query" / "0001_c1s1_000001_00.jpg"
    folder.mkdir()
    return lambda: _datamodule(root).setup(), DatasetFormatError, [str(folder), "folder named like an image"]


@case("data.test_batch_size=0 at setup")
def _test_batch_zero(tmp: Path):
    root = tmp / "unused"
    return lambda: _datamodule(root, test_batch_size=0), ValueError, ["data.test_batch_size=0", "positive"]


@case("paths.data_dir pointing at the dataset folder itself")
def _data_dir_is_dataset(tmp: Path):
    from reid.data.datasets import DatasetLayoutError, load_market1501

    dataset = _tree(tmp)  # the user set paths.data_dir=<dataset>, the config appends the dataset's name
    expected = [f"paths.data_dir={tmp}", f"data.dataset.root={dataset}", "is itself the dataset folder"]
    return lambda: load_market1501(dataset / dataset.name), DatasetLayoutError, expected


# ---- item 9: test-only evaluation of a checkpoint of another model ------------------------------
@case("test-only ckpt_path of a shallower model")
def _eval_other_model(tmp: Path):
    task, path = _task(), str(tmp / "depth1.ckpt")
    state = {f"net.{k}": v for k, v in ReIDNet(_vit(depth=1), num_classes=5).state_dict().items()}
    expected = [f"ckpt_path={path}", "does not fit this model", "missing", "blocks.1."]
    return lambda: task.load_for_evaluation({"state_dict": state}, path), ValueError, expected


# ---- issue 29: faults found late before, now refused at the start, by name ---------------------
def _with_nonfinite(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    state = dict(state)
    state[name] = state[name].clone()
    state[name].view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    return state


@case("weights with NaN/Inf in one tensor")
def _nonfinite_weights(tmp: Path):
    torch.save(_with_nonfinite(_vit().state_dict(), "blocks.1.attn.qkv.weight"), tmp / "diverged.pth")
    expected = ["diverged.pth", "NaN/Inf", "1 of", "backbone.blocks.1.attn.qkv.weight (3 of"]
    return _load(tmp / "diverged.pth"), ValueError, expected


@case("ckpt_path of a run whose weights hold NaN")
def _nonfinite_ckpt(tmp: Path):
    state = {f"net.{k}": v for k, v in _net().state_dict().items()}
    state = _with_nonfinite(state, "net.backbone.cls_token")
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.6.6", "loops": {}}, tmp / "nan.ckpt")
    path = str(tmp / "nan.ckpt")
    expected = [f"ckpt_path={path}", "NaN/Inf", "net.backbone.cls_token (3 of"]
    return lambda: check_run_checkpoint(path, _LightningNet(), True), ValueError, expected


@case("truncated JPEG in the query split (its header reads)")
def _truncated_query_jpeg(tmp: Path):
    from reid.data.image_dataset import ImageReadError

    root = _tree(tmp)
    path = sorted((root / "query").glob("*.jpg"))[-1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expected = [str(path), "cannot be decoded", "1 of "]
    return lambda: _datamodule(root).setup(), ImageReadError, expected


@case("LUPerson tree with a symlink loop")
def _luperson_loop(tmp: Path):
    from reid.data.datasets import DatasetFormatError
    from reid.data.datasets.luperson import load_luperson

    root = generate_luperson_tree(tmp / "LUPerson", num_images=6, num_scenes=2, num_identities=3)
    loop = root / "scene_00000" / "again"
    loop.symlink_to(root, target_is_directory=True)
    expected = [str(loop), "links to", "symlink loop"]
    return lambda: load_luperson(root), DatasetFormatError, expected


@case("binary metrics.csv found by a resumed run")
def _binary_metrics(tmp: Path):
    from reid.training.csv_logger import MetricsFileError, ResumableCSVLogger

    (tmp / "csv").mkdir()
    path = tmp / "csv" / "metrics.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 8)
    logger = ResumableCSVLogger(tmp, name="csv", version="")
    return lambda: logger.resume_at(3), MetricsFileError, [str(path), "not a CSV log"]


@case("metrics.csv of another program found by a resumed run")
def _foreign_metrics(tmp: Path):
    from reid.training.csv_logger import MetricsFileError, ResumableCSVLogger

    (tmp / "csv").mkdir()
    path = tmp / "csv" / "metrics.csv"
    path.write_text("epoch,loss\n0,1.0\n")
    logger = ResumableCSVLogger(tmp, name="csv", version="")
    return lambda: logger.resume_at(3), MetricsFileError, [str(path), "no 'step' column"]


def test_a_metrics_csv_whose_last_row_was_cut_is_repaired_before_the_resumed_run_logs(tmp_path, caplog):
    """A kill inside a row's write (before: the resumed run trained, then crashed at test with "dict
    contains fields not in fieldnames: None" and wrote no results.json)."""
    from reid.training.csv_logger import ResumableCSVLogger

    (tmp_path / "csv").mkdir()
    path = tmp_path / "csv" / "metrics.csv"
    path.write_text("step,train/loss\n0,1.0\n1,0.5\n2,0.33,7,9")  # the last row cut mid-write
    with caplog.at_level("WARNING", logger="reid"):
        logger = ResumableCSVLogger(tmp_path, name="csv", version="")
        logger.resume_at(1)
    assert "last row was cut" in caplog.text and str(path) in caplog.text
    logger.log_metrics({"train/loss": 0.3}, step=2)
    logger.log_metrics({"test/mAP": 50.0}, step=2)  # a key the file has not seen: the header widens
    logger.save()
    assert path.read_text().splitlines() == [
        "step,test/mAP,train/loss",
        "0,,1.0",
        "1,,0.5",
        "2,,0.3",
        "2,50.0,",
    ]


def test_export_backbone_reports_a_bad_file_in_one_line_and_a_traceback_only_with_debug(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "pass_last.ckpt"
    torch.save({"state_dict": _vit().state_dict()}, bad)
    bad.write_bytes(bad.read_bytes()[:200])  # an interrupted copy
    command = [sys.executable, "-m", "reid.tools.export_backbone", str(bad), str(tmp_path / "out.pth")]
    env = {**os.environ, "PYTHONPATH": str(CONFIG_DIR.parent)}
    plain = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    lines = [line for line in plain.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "truncated zip archive" in lines[0], plain.stderr
    assert "weights_only=False" not in plain.stderr
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_exported_nonfinite_weights_are_refused_naming_the_tensor(tmp_path):
    from reid.tools.export_backbone import export_backbone

    state = {f"teacher.backbone.{k}": v for k, v in _vit().state_dict().items()}
    torch.save({"state_dict": _with_nonfinite(state, "teacher.backbone.norm.weight")}, tmp_path / "nan.ckpt")
    with pytest.raises(ValueError, match=r"nan\.ckpt holds NaN/Inf values in 1 of .*: norm\.weight \(3 of"):
        export_backbone(tmp_path / "nan.ckpt", tmp_path / "out.safetensors")


def test_evaluation_images_are_decoded_at_setup_up_to_the_configured_count(tmp_path, caplog):
    root = _tree(tmp_path)
    path = sorted((root / "bounding_box_test").glob("*.jpg"))[-1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    with caplog.at_level("INFO", logger="reid"):
        _datamodule(root, decode_check_max_images=10).setup()  # more than 10: left to the evaluation
    assert "more than data.decode_check_max_images=10" in caplog.text
    from reid.data.image_dataset import ImageReadError

    with pytest.raises(ImageReadError, match="cannot be decoded"):
        _datamodule(root).setup()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_an_error_naming_it(tmp_path, name):
    action, kind, fragments = CASES[name](tmp_path)
    with pytest.raises(kind) as error:
        action()
    causes, cause = [], error.value
    while cause is not None:  # Hydra's composition errors carry OmegaConf's message as their cause
        causes.append(str(cause))
        cause = cause.__cause__
    message = " | ".join(causes)
    missing = [fragment for fragment in fragments if fragment not in message]
    assert not missing, f"{missing} not in: {message}"
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "unexpected pos" not in message  # torch's zip writer, not the cause


def test_partial_file_loads_through_the_task_with_weights_strict_false(tmp_path):
    state = {k: v for k, v in _vit().state_dict().items() if not k.startswith("blocks.1.")}
    torch.save(state, tmp_path / "half.pth")
    with pytest.warns(UserWarning, match=r"half\.pth .*19 of 31 backbone tensors \(PARTIAL"):
        task = _task(weights=str(tmp_path / "half.pth"), weights_strict=False)
    torch.testing.assert_close(task.net.backbone.blocks[0].state_dict(), _vit().blocks[0].state_dict())


def test_two_runs_started_in_the_same_second_get_two_folders():
    """conf/hydra/default.yaml: microseconds and the process id follow the second; names sort by time."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        first, second = (compose("run", return_hydra_config=True) for _ in range(2))
    for key in ("run", "sweep"):
        a, b = str(first.hydra[key].dir), str(second.hydra[key].dir)
        assert a != b and a < b and a.endswith(f"_{os.getpid()}"), (a, b)
    GlobalHydra.instance().clear()


def test_a_resumed_csv_log_keeps_its_rows(tmp_path):
    """Lightning's CSVLogger deletes metrics.csv when a resumed run starts logging (33 -> 11 lines in the
    issue); ours appends, widens the header for a new key, and drops rows after the checkpoint's step."""
    from reid.training.csv_logger import ResumableCSVLogger

    first = ResumableCSVLogger(tmp_path, name="csv", version="")
    for step in range(4):
        first.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    first.save()
    resumed = ResumableCSVLogger(tmp_path, name="csv", version="")  # a resume from a checkpoint at step 2
    resumed.resume_at(2)
    resumed.log_metrics({"train/loss": 0.3, "val/mAP": 50.0}, step=3)
    resumed.save()
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,train/loss,val/mAP"
    assert rows[1:] == ["0,1.0,", "1,0.5,", "2,0.3333333333333333,", "3,0.3,50.0"]


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    """PIL's ``convert("RGB")`` of mode ``I;16`` clips every value above 255 to white."""
    from PIL import Image

    from reid.data.image_dataset import read_image

    values = np.array([[0, 30000], [65535, 257]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "depth.png")
    assert Image.open(tmp_path / "depth.png").mode == "I;16"
    rgb = np.asarray(read_image(str(tmp_path / "depth.png")))
    assert rgb.shape == (2, 2, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    assert rgb[..., 0].tolist() == [[0, round(30000 * 255 / 65535)], [255, 1]]


def test_exif_rotated_image_is_read_upright(tmp_path):
    """Orientation 6 (stored rotated 90 degrees counter-clockwise): the viewer turns it clockwise."""
    from PIL import Image

    from reid.data.image_dataset import read_image

    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = 255  # left half white as stored: the top half once upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = np.asarray(read_image(str(tmp_path / "phone.jpg")))
    assert upright.shape == (40, 20, 3)
    assert upright[:15].mean() > 200 and upright[25:].mean() < 50


def test_images_smaller_than_a_patch_are_logged(tmp_path, caplog):
    from PIL import Image

    root = _tree(tmp_path)
    small = sorted((root / "bounding_box_test").glob("*.jpg"))[-1]
    Image.new("RGB", (8, 12)).save(small)
    with caplog.at_level("WARNING", logger="reid"):
        _datamodule(root).setup()
    assert f"{small} (8x12)" in caplog.text and "smaller than 16 px" in caplog.text


def test_k_above_an_identitys_images_is_logged_once_with_the_count(caplog):
    from reid.data.samplers import IdentitySampler

    pids = [0] * 2 + [1] * 6 + [2] * 3 + [3] * 8  # K=4: identities 0 and 2 are short
    with caplog.at_level("WARNING", logger="reid"):
        for _ in range(3):  # a sampler rebuilt (every epoch, every rank) logs once
            IdentitySampler(pids, batch_size=8, num_instances=4, seed=123)
    lines = [r.getMessage() for r in caplog.records if "sampled with replacement" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("2 of 4 training identities") and "K=4" in lines[0]


def test_header_check_of_3000_files_is_fast(tmp_path):
    """The setup check reads headers only: 3000 tiny PNGs well under 5 s on a shared CPU."""
    import time

    from PIL import Image

    from reid.data.image_dataset import check_image_headers

    Image.new("RGB", (4, 8)).save(tmp_path / "one.png")
    data = (tmp_path / "one.png").read_bytes()
    paths = [str(tmp_path / f"{i:05d}.png") for i in range(3000)]
    for path in paths:
        Path(path).write_bytes(data)
    start = time.perf_counter()
    small = check_image_headers(paths, "test", min_side=6)
    assert time.perf_counter() - start < 5.0
    assert len(small) == 3000 and small[0].endswith("(4x8)")
