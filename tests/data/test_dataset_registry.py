"""The dataset registry (issue 32, item 4): a dataset in its real format is one parser module, found by name
from the configs and by the tools.

Before the registry a dataset took three files (its parser, ``conf/dataset/<name>.yaml``, an entry in
``LOADERS``) and two more for the tools to label it (``reid.inference.name_labels``); the end-to-end test
below writes one file outside the package and trains, evaluates and extracts with it.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from reid.config_store import compose_option
from reid.data.datasets.errors import DatasetFormatError
from reid.data.datasets.registry import MODULES_VARIABLE, register_dataset, registered_datasets
from reid.data.records import ReIDDataset
from reid.data.synthetic import load_synthetic
from reid.dataset_options import compose_dataset_option, dataset_options
from tests.conftest import TINY_MARKET
from tests.data.trees import write_cuhk03_np, write_market1501

ROOT = Path(__file__).resolve().parents[2]
BUILT_IN = {
    "cuhk03_np",
    "market1501",
    "dukemtmc",
    "occ_duke",
    "msmt17",
    "veri776",
    "vehicleid",
    "luperson",
    "folder",
}


def test_every_parser_of_the_package_is_registered_with_a_config_of_its_parameters() -> None:
    registered = registered_datasets()
    assert set(registered) == BUILT_IN
    for name, entry in registered.items():
        node = compose_dataset_option(name)  # what `data/dataset=<name>` composes
        assert get_method(node._target_) is entry.loader and node._partial_ is True
        keys = {str(k) for k in node if not str(k).startswith("_")}
        assert keys == set(inspect.signature(entry.loader).parameters), name
        assert OmegaConf.to_container(node)["root"] == f"${{paths.data_dir}}/{entry.folder}"
    assert set(dataset_options()) >= BUILT_IN | {"synthetic", "synthetic_tiny"}  # yaml presets beside them


def test_the_configs_keep_the_values_the_yaml_files_had() -> None:
    """The values of the retired conf/dataset/*.yaml files (their loader defaults are the one source now)."""
    assert OmegaConf.to_container(compose_dataset_option("vehicleid")) == {
        "_target_": "reid.data.datasets.vehicleid.load_vehicleid",
        "_partial_": True,
        "root": "${paths.data_dir}/VehicleID_V1.0",
        "test_size": 800,
        "num_trials": 10,
        "seed": 0,
    }
    folder = compose_dataset_option("folder")
    assert folder.name_pattern == r"(?P<pid>-?\d+)_c(?P<camid>\d+)" and folder.labels_csv is None
    assert compose_dataset_option("veri776").missing_view == "drop"


def test_a_labelled_dataset_is_also_a_data_option_with_its_settings():
    """data=<name> without a conf/data file: the supervised datamodule on the registered loader."""
    veri = compose_option("data", "veri776")
    assert veri._target_ == "reid.data.reid_datamodule.ReIDDataModule" and list(veri.image_size) == [256, 256]
    assert veri.dataset._target_ == "reid.data.datasets.veri776.load_veri776"
    cuhk03 = compose_option("data", "cuhk03_np")
    assert list(cuhk03.image_size) == [256, 128] and cuhk03.dataset.boxes == "detected"
    options = set(dataset_options())
    assert {"market1501", "cuhk03_np", "luperson"} <= options
    with pytest.raises(Exception, match="luperson"):  # unlabelled: data=luperson_ssl is its datamodule
        compose_option("data", "luperson")


def test_a_registered_config_instantiates_to_its_loader(tmp_path: Path) -> None:
    write_market1501(tmp_path)
    cfg = OmegaConf.create(
        {"paths": {"data_dir": str(tmp_path)}, "dataset": compose_dataset_option("market1501")}
    )
    data = instantiate(cfg.dataset)()
    assert isinstance(data, ReIDDataset) and data.num_train_pids == 2


CUHK03_SPEC = {
    "bounding_box_train": [(3, 1), (3, 2), (8, 1), (8, 2)],
    "query": [(700, 1), (701, 2)],
    "bounding_box_test": [(700, 2), (701, 1), (702, 2)],
}


def test_cuhk03_np_reads_either_kind_of_box_from_the_release_or_its_parent(tmp_path: Path) -> None:
    """A dataset added by one file (this session): found by name, read from its release layout."""
    write_cuhk03_np(tmp_path, CUHK03_SPEC, "detected")
    write_cuhk03_np(tmp_path, {**CUHK03_SPEC, "query": [(700, 1)]}, "labeled")
    cfg = OmegaConf.create(
        {"paths": {"data_dir": str(tmp_path)}, "dataset": compose_dataset_option("cuhk03_np")}
    )
    detected = instantiate(cfg.dataset)()
    assert detected.name == "CUHK03-NP (detected)" and detected.num_train_pids == 2
    assert sorted((r.pid, r.camid) for r in detected.query) == [(700, 0), (701, 1)]
    assert len(detected.gallery) == 3 and detected.num_cameras == 2
    labeled = instantiate(cfg.dataset, boxes="labeled")()
    assert len(labeled.query) == 1
    assert len(instantiate(cfg.dataset, root=str(tmp_path / "cuhk03-np" / "detected"))().query) == 2
    with pytest.raises(ValueError, match=r"boxes='hand'; expected one of \('detected', 'labeled'\)"):
        instantiate(cfg.dataset, boxes="hand")()
    (tmp_path / "cuhk03-np" / "detected" / "query" / "0700_c3_9.png").write_bytes(b"x")
    with pytest.raises(DatasetFormatError, match=r"camera 3 out of range \[1, 2\]"):
        instantiate(cfg.dataset)()


def test_bad_registrations_fail_where_the_dataset_is_written() -> None:
    def load_thing(root: str, size: int = 1) -> ReIDDataset:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match=r"dataset name 'Bad-Name': expected lower case"):
        register_dataset("Bad-Name", folder="x")
    with pytest.raises(TypeError, match=r"config keys \['sise'\] are not keyword parameters"):
        register_dataset("thing", folder="Thing", config={"sise": 2})(load_thing)
    with pytest.raises(ValueError, match=r"dataset 'market1501' is registered twice: by "):
        register_dataset("market1501", folder="Thing")(load_thing)
    assert "thing" not in registered_datasets()


TOY_MODULE = '''
"""ToyReID: <root>/ToyReID/{train,query,gallery}/<pid>/<pid>-c<camera>-<frame>.png, a folder per identity."""

import re
from pathlib import Path

from reid.data.datasets.errors import resolve_root
from reid.data.datasets.market_layout import NameFormat, parse_name
from reid.data.datasets.registry import register_dataset
from reid.data.records import ReIDDataset, relabel

NAME_FORMAT = NameFormat(
    pattern=re.compile(r"(?P<pid>\\d+)-c(?P<camid>\\d)-\\d+\\.png"),
    example="0007-c2-000.png",
    pid_range=(0, 9999),
    cam_range=(1, 9),
    distractor_pid=0,
)


@register_dataset("toyreid", folder="ToyReID", name_format=NAME_FORMAT)
def load_toyreid(root: str | Path, min_images: int = 1) -> ReIDDataset:
    folder = resolve_root(root, "ToyReID", ("ToyReID",), ("train", "query", "gallery"))

    def split(name: str) -> list:
        paths = sorted((folder / name).glob("*/*.png"))
        records = [parse_name(str(p), NAME_FORMAT, "ToyReID") for p in paths]
        return records if len(records) >= min_images else []

    train = [r for r in split("train") if r.pid != 0]
    return ReIDDataset(name="ToyReID", train=relabel(train), query=split("query"), gallery=split("gallery"))
'''


def write_toy_tree(root: Path, source: ReIDDataset) -> None:
    """The synthetic people re-filed in ToyReID's layout: same images, another format."""
    for split, records in (("train", source.train), ("query", source.query), ("gallery", source.gallery)):
        for index, record in enumerate(records):
            pid = Path(record.path).name.split("_")[0]  # the released identity (train is relabelled)
            target = root / "ToyReID" / split / pid / f"{pid}-c{record.camid + 1}-{index:03d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(record.path, target)


def test_a_dataset_in_one_file_trains_evaluates_and_labels_by_name(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "toy_reid_dataset.py").write_text(textwrap.dedent(TOY_MODULE))
    data_dir = tmp_path / "data"
    write_toy_tree(data_dir, load_synthetic(tmp_path / "people", **TINY_MARKET))
    assert not any(p.name.endswith(".jpg") and "-c" in p.name for p in data_dir.rglob("*"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]),
        MODULES_VARIABLE: "toy_reid_dataset",
    }
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "reid.run", "data=synthetic_tiny", "data/dataset=toyreid",
        "data.test_datasets=[toyreid]", f"paths.data_dir={data_dir}", f"hydra.run.dir={out}",
        "trainer=cpu", "logger=csv", "trainer.max_epochs=1", "callbacks.progress_bar=null",
        "+model.backbone.depth=1", "+model.backbone.embed_dim=32", "+model.backbone.num_heads=2",
        "data.num_workers=0", "evaluate_before_fit=false",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert 0 < results["test"]["mAP"] <= 100  # one target: flat metrics
    resolved = OmegaConf.load(out / ".hydra" / "config.yaml")
    assert resolved.data.dataset._target_ == "toy_reid_dataset.load_toyreid"
    assert resolved.data.dataset.min_images == 1  # the loader's keyword default, with no YAML written

    # The tools label its images by the registered file-name format.
    query = data_dir / "ToyReID" / "query"
    done = subprocess.run(
        [sys.executable, "-m", "reid.tools.extract", str(out), str(query), str(tmp_path / "q.npy")],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = (tmp_path / "q.csv").read_text().splitlines()
    first = next(iter(sorted(query.rglob("*.png"))))
    pid, cam = first.name.split("-")[:2]
    assert any(row.endswith(f",{int(pid)},{int(cam[1:]) - 1},toyreid") for row in rows[1:]), rows[:3]


def test_a_module_that_cannot_be_imported_is_named(tmp_path: Path) -> None:
    env = {**os.environ, MODULES_VARIABLE: "no_such_dataset_module"}
    done = subprocess.run(
        [sys.executable, "-m", "reid.run", "data=synthetic_tiny", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"dataset module 'no_such_dataset_module' (from {MODULES_VARIABLE}" in done.stderr


def test_the_package_modules_register_in_a_fresh_process() -> None:
    """A parser file dropped into reid/data/datasets/ needs no import elsewhere: discovery walks it."""
    code = "from reid.data.datasets.registry import registered_datasets; print(sorted(registered_datasets()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sorted(BUILT_IN))
