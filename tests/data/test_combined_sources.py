"""Multi-source training (``data.extra_train_datasets``, reid/data/combined.py): the union of train splits,
its counts, the config resolver of the key, its bad input, and a tiny run through ``reid.run``."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from reid.config_checks import ConfigValueError
from reid.data.combined import CombinedDataset, TrainSource, combine_train_splits
from reid.data.records import Record, ReIDDataset
from reid.data.reid_datamodule import EvaluationTarget, ReIDDataModule
from reid.dataset_options import TRAIN_KEY, resolve_dataset_names
from reid.run import run
from tests.conftest import TINY_MARKET, TINY_RUN

KEY = "data.extra_train_datasets"


def _write(path: Path, value: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 16, 3), value, dtype=np.uint8)).save(path)
    return str(path)


def _source(root: Path, name: str, ids: int, cameras: int, test_camera: int | None = None) -> ReIDDataset:
    """``ids`` identities x 4 train images over ``cameras`` cameras; one query and one gallery image per id
    (on ``test_camera``, default the last train camera)."""
    test_camera = cameras - 1 if test_camera is None else test_camera
    train = [
        Record(_write(root / f"{name}_t{p}_{i}.png", 10 * p + i), p, i % cameras, i % 2)
        for p in range(ids)
        for i in range(4)
    ]
    query = [Record(_write(root / f"{name}_q{p}.png", 100 + p), 50 + p, 0) for p in range(ids)]
    gallery = [Record(_write(root / f"{name}_g{p}.png", 150 + p), 50 + p, test_camera) for p in range(ids)]
    return ReIDDataset(name, train, query, gallery)


def _torchreid_add(first: ReIDDataset, second: ReIDDataset) -> list[tuple[str, int, int]]:
    """Reference: torchreid ``Dataset.__add__`` on (path, pid, camid) train tuples, read in
    KaiyangZhou/deep-person-reid torchreid/data/datasets/dataset.py: the second dataset's pids are moved by
    the first's number of distinct train pids, its camids by the first's number of distinct train cameras."""
    num_pids = len({r.pid for r in first.train})
    num_cams = len({r.camid for r in first.train})
    train = [(r.path, r.pid, r.camid) for r in first.train]
    return train + [(r.path, r.pid + num_pids, r.camid + num_cams) for r in second.train]


def test_two_sources_match_torchreid_add(tmp_path):
    """Hand-built Market-like (3 ids, 2 cameras) + Duke-like (2 ids, 3 cameras) sources, each train split
    holding all its cameras: the union equals torchreid's ``Dataset.__add__`` record for record (paths and
    order kept, pids 3-4 and cameras 2-4 for the second source), views unchanged, and the query/gallery are
    the first source's. fast-reid (JDAI-CV/fast-reid fastreid/data/build.py, datasets/*.py, common.py)
    prefixes train pids and camids with the dataset name and relabels the sorted strings in
    ``CommDataset``: the same 5 classes and 5 cameras, disjoint per dataset, in another order."""
    market, duke = _source(tmp_path, "m", 3, 2), _source(tmp_path, "d", 2, 3)
    union = combine_train_splits(market, {"duke": duke})
    assert [(r.path, r.pid, r.camid) for r in union.train] == _torchreid_add(market, duke)
    assert [r.viewid for r in union.train] == [r.viewid for r in [*market.train, *duke.train]]
    assert [r.pid for r in union.train[12:]] == [3] * 4 + [4] * 4
    assert {r.camid for r in union.train[12:]} == {2, 3, 4}
    assert (union.query, union.gallery, union.trials) == (market.query, market.gallery, market.trials)
    assert union.name == "m+duke"
    assert union.sources == (TrainSource("m", 12, 3, 2, 2, 0, 0), TrainSource("duke", 8, 2, 3, 2, 3, 2))
    assert (union.num_train_pids, union.num_cameras, union.num_views) == (5, 5, 2)
    assert union.info.num_classes == 5 and union.info.num_cameras == 5


def test_camera_offset_counts_every_split_of_the_earlier_source(tmp_path):
    """Our one deliberate difference from torchreid: a camera that only the first source's gallery shows
    (camera 3 here, train cameras 0-1) is counted, so the second source's train cameras start at 4 and
    never share an SIE row with a camera of the first source's query or gallery (torchreid's count of
    distinct train cameras, 2, would put them on 2-4, colliding with gallery camera 3)."""
    market, duke = _source(tmp_path, "m", 3, 2, test_camera=3), _source(tmp_path, "d", 2, 3)
    union = combine_train_splits(market, {"duke": duke})
    assert {r.camid for r in union.train[12:]} == {4, 5, 6}
    assert union.num_cameras == 4 + 3 == union.sources[1].camid_offset + 3


def test_three_sources_chain_the_offsets(tmp_path):
    a, b, c = _source(tmp_path, "a", 2, 2), _source(tmp_path, "b", 3, 1), _source(tmp_path, "c", 1, 4)
    union = combine_train_splits(a, {"b": b, "c": c})
    assert [(s.pid_offset, s.camid_offset) for s in union.sources] == [(0, 0), (2, 2), (5, 3)]
    assert sorted({r.pid for r in union.train}) == list(range(6))
    assert (union.num_train_pids, union.num_cameras, union.num_views) == (6, 7, 2)


def test_views_are_shared_not_offset(tmp_path):
    """A viewpoint label names a direction (TransReID's VeRi orientations), the same in every dataset: a
    VeRi-like source with 4 views plus a VehicleID-like one without view labels (all view 0) gives 4 views,
    and the second source's images stay at view 0 (their cameras are their own)."""
    veri = _source(tmp_path, "veri", 2, 2)
    veri.train = [Record(r.path, r.pid, r.camid, i % 4) for i, r in enumerate(veri.train)]
    vehicleid = _source(tmp_path, "vid", 2, 1)
    vehicleid.train = [Record(r.path, r.pid, r.camid, 0) for r in vehicleid.train]
    union = combine_train_splits(veri, {"vehicleid": vehicleid})
    assert union.num_views == 4
    assert {(r.camid, r.viewid) for r in union.train[8:]} == {(2, 0)}


def _datamodule(tmp_path: Path, **kwargs) -> ReIDDataModule:
    market, duke = _source(tmp_path, "m", 3, 2), _source(tmp_path, "d", 2, 3)
    return ReIDDataModule(
        lambda: market,
        extra_train_datasets={"duke": lambda: duke},
        image_size=(16, 8),
        batch_size=4,
        num_instances=2,
        num_workers=0,
        test_batch_size=100,
        **kwargs,
    )


def test_datamodule_info_and_default_evaluation_of_the_union(tmp_path, caplog):
    """The model is built for the union (5 classes, 5 cameras; with a target of 8 cameras the camera table
    covers it too), the evaluation default stays the first source's query/gallery under its own name, and
    setup logs one line per source."""
    dm = _datamodule(tmp_path)
    with caplog.at_level(logging.INFO, logger="reid"):
        dm.setup()
    assert isinstance(dm.train_data, CombinedDataset)
    assert (dm.info.num_classes, dm.info.num_cameras, dm.info.num_views) == (5, 5, 2)
    assert dm.evaluation_targets == [EvaluationTarget("m", 3, ())]
    assert len(dm.val_dataloader().dataset) == 6
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train source")]
    assert lines == [
        "train source m: 12 images, 3 ids (0-2), 2 cameras (0-1)",
        "train source duke: 8 images, 2 ids (3-4), 3 cameras (2-4)",
    ]
    target = _source(tmp_path, "t", 2, 8)
    with_target = _datamodule(tmp_path, test_datasets={"t": lambda: target})
    assert with_target.info.num_cameras == 8 and with_target.info.num_classes == 5


def test_pk_sampler_draws_identities_of_both_sources_in_an_epoch(tmp_path):
    """One epoch of P x K batches (P=2, K=2) over the union: every identity of both sources is drawn (each
    has two chunks of K), every batch has P identities with K images, and the labels are the union's."""
    dm = _datamodule(tmp_path)
    batches = list(dm.train_dataloader())
    pids = torch.cat([b["pid"] for b in batches])
    assert set(pids.tolist()) == set(range(5))  # 0-2 from the first source, 3-4 from the second
    assert {c for b in batches for c in b["camid"][b["pid"] >= 3].tolist()} <= {2, 3, 4}
    for batch in batches:
        assert sorted(torch.bincount(batch["pid"]).tolist())[-2:] == [2, 2]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (lambda root: ReIDDataset("d", [], [], []), f"{KEY}: dataset 'duke' has an empty train split"),
        (
            lambda root: ReIDDataset("d", [Record(str(root / "x.png"), 7, 0)], [], []),
            f"{KEY}: dataset 'duke': train identities must be relabelled to 0..0",
        ),
        (lambda root: _source(root, "m", 3, 2), f"{KEY}: dataset 'duke' holds {{root}}/m_t0_0.png"),
    ],
    ids=["empty-train", "not-relabelled", "same-images-twice"],
)
def test_bad_sources_name_the_key_and_the_source(tmp_path, extra, message):
    market = _source(tmp_path, "m", 3, 2)
    dm = ReIDDataModule(lambda: market, extra_train_datasets={"duke": lambda: extra(tmp_path)}, num_workers=0)
    with pytest.raises(ValueError, match=re.escape(message.format(root=tmp_path))):
        dm.setup()


def test_a_failing_source_loader_names_the_source(tmp_path):
    def missing() -> ReIDDataset:
        raise FileNotFoundError("no DukeMTMC-reID/bounding_box_train under /data")

    market = _source(tmp_path, "m", 3, 2)
    dm = ReIDDataModule(lambda: market, extra_train_datasets={"dukemtmc": missing}, num_workers=0)
    message = f"{KEY}.dukemtmc: its loader failed: FileNotFoundError: no DukeMTMC-reID"
    with pytest.raises(RuntimeError, match=re.escape(message)) as error:
        dm.setup()
    assert isinstance(error.value.__cause__, FileNotFoundError)


def test_an_unresolved_list_is_refused_by_the_datamodule():
    with pytest.raises(ValueError, match=re.escape(f"{KEY}=['dukemtmc']: expected {{name: dataset loader}}")):
        ReIDDataModule(lambda: None, extra_train_datasets=["dukemtmc"])


def test_source_names_resolve_with_the_run_paths(compose_config, tiny_data_dir):
    cfg = compose_config(*TINY_RUN, f"{KEY}=[synthetic_duke_tiny,dukemtmc]")
    resolve_dataset_names(cfg, TRAIN_KEY)
    assert list(cfg.data.extra_train_datasets) == ["synthetic_duke_tiny", "dukemtmc"]
    assert cfg.data.extra_train_datasets.synthetic_duke_tiny.num_cameras == 8  # its defaults list applied
    assert cfg.data.extra_train_datasets.dukemtmc.root == f"{tiny_data_dir}/DukeMTMC-reID"


def test_the_mapping_form_is_kept(compose_config):
    cfg = compose_config(*TINY_RUN, f"+data/dataset@{KEY}.duke=synthetic_duke_tiny")
    resolve_dataset_names(cfg, TRAIN_KEY)
    assert list(cfg.data.extra_train_datasets) == ["duke"]
    assert cfg.data.extra_train_datasets.duke._target_.endswith("load_synthetic_duke")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            f"{KEY}=[dukemtc]",
            f"{KEY}: 'dukemtc' is not a dataset option; expected one of cuhk03_np, dukemtmc, folder",
        ),
        (f"{KEY}=[dukemtmc,dukemtmc]", f"{KEY}: 'dukemtmc' is listed twice; each source is added once"),
        (f"{KEY}=dukemtmc", f"{KEY}='dukemtmc': expected a non-empty list of dataset names"),
        (f"{KEY}=[synthetic_tiny]", f"{KEY}: 'synthetic_tiny' is data.dataset itself"),
        (f"+{KEY}.duke=dukemtmc", f"{KEY}.duke: expected a dataset loader config with _target_"),
    ],
    ids=["unknown", "repeated", "not-a-list", "data.dataset", "mapping-without-target"],
)
def test_bad_source_names_fail_before_anything_is_built(compose_config, override, message):
    with pytest.raises(ConfigValueError, match=re.escape(message)):
        run(compose_config(*TINY_RUN, override))


def test_a_tiny_multi_source_run_trains_on_both_and_evaluates_on_the_first(compose_config, caplog):
    """synthetic_tiny (8 ids, 3 cameras) + synthetic_duke_tiny (8 ids, 8 cameras) through reid.run: the
    ID classifier of the checkpoint has 16 outputs, the run logs both sources and is evaluated on
    synthetic_tiny's own query (flat results)."""
    cfg = compose_config(
        *TINY_RUN, f"{KEY}=[synthetic_duke_tiny]", "trainer.max_epochs=1", "trainer.limit_train_batches=2"
    )
    with caplog.at_level(logging.INFO, logger="reid"):
        summary = run(cfg)
    assert 0.0 < summary["test"]["mAP"] <= 100.0
    first = instantiate(cfg.data.dataset)()
    assert summary["test"]["num_queries"] == len(first.query)  # synthetic_tiny's query, not the union's
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train source")]
    assert lines == [
        "train source synthetic: 48 images, 8 ids (0-7), 3 cameras (0-2)",
        "train source synthetic_duke_tiny: 48 images, 8 ids (8-15), 8 cameras (3-10)",
    ]
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu")
    widths = {k: v.shape[0] for k, v in ckpt["state_dict"].items() if k.endswith("classifier.weight")}
    assert widths and set(widths.values()) == {TINY_MARKET["num_train_ids"] + 8}
