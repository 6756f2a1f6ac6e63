"""Parsers with non-standard protocols: VehicleID trials, LUPerson keep-lists, user folders; configs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from reid.data.datasets import (
    DatasetFormatError,
    DatasetLayoutError,
    load_folder,
    load_luperson,
    load_vehicleid,
)
from reid.data.datasets.vehicleid import make_trials
from reid.data.records import UNLABELLED

from .trees import write_folder_dataset, write_luperson, write_vehicleid

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "dataset"

# ---------------------------------------------------------------- VehicleID

TEST_IDS = [40, 40, 40, 41, 41, 42, 43, 43, 43, 43]  # 4 vehicles, 10 images


def test_vehicleid_train_test_and_cameras(tmp_path: Path) -> None:
    write_vehicleid(tmp_path, train=[7, 7, 3, 9], tests={800: TEST_IDS, 1600: [50, 50]})
    data = load_vehicleid(tmp_path, test_size=800, num_trials=3, seed=0)
    assert [r.pid for r in data.train] == [1, 1, 0, 2]  # 7, 7, 3, 9 relabelled in sorted order
    assert [r.pid for r in data.query] == TEST_IDS and data.gallery == []
    assert all(r.camid == 0 and r.viewid == 0 for r in [*data.train, *data.query])
    assert [Path(r.path).name for r in data.query[:2]] == ["0000005.jpg", "0000006.jpg"]
    assert all(Path(r.path).is_file() for r in data.query)
    assert data.name == "VehicleID-800" and len(data.trials) == 3
    assert [r.pid for r in load_vehicleid(tmp_path, test_size=1600).query] == [50, 50]


def test_vehicleid_each_trial_has_one_gallery_image_per_identity(tmp_path: Path) -> None:
    write_vehicleid(tmp_path, train=[1], tests={800: TEST_IDS})
    data = load_vehicleid(tmp_path, num_trials=5, seed=3)
    pids = np.array([r.pid for r in data.query])
    for trial in data.trials:
        assert sorted(pids[trial.gallery_index].tolist()) == [40, 41, 42, 43]
        assert np.intersect1d(trial.query_index, trial.gallery_index).size == 0
        assert sorted([*trial.query_index.tolist(), *trial.gallery_index.tolist()]) == list(range(10))
        # vehicle 42 has one image: always in the gallery, never a query.
        assert 5 in trial.gallery_index and 5 not in trial.query_index


def test_vehicleid_trials_reproducible_and_seed_dependent() -> None:
    pids = np.repeat(np.arange(20), 6)  # 20 vehicles x 6 images: 6^20 possible galleries
    first, again, other = (
        make_trials(pids, 4, seed=0),
        make_trials(pids, 4, seed=0),
        make_trials(pids, 4, seed=1),
    )
    assert all(np.array_equal(a.gallery_index, b.gallery_index) for a, b in zip(first, again))
    assert not np.array_equal(first[0].gallery_index, other[0].gallery_index)
    assert not np.array_equal(first[0].gallery_index, first[1].gallery_index)  # trials differ
    # every image of a vehicle is picked with roughly equal frequency over many trials
    picks = np.concatenate([t.gallery_index for t in make_trials(pids, 600, seed=5)]) % 6
    assert np.bincount(picks, minlength=6).min() > 0.8 * len(picks) / 6


def test_vehicleid_errors(tmp_path: Path) -> None:
    folder = write_vehicleid(tmp_path, train=[1, 2], tests={800: [1, 2]}, write_files=False)
    with pytest.raises(
        DatasetLayoutError, match=r"test_size=2400: .*available test lists: \['test_list_800.txt'\]"
    ):
        load_vehicleid(tmp_path, test_size=2400)
    with pytest.raises(ValueError, match="num_trials=0"):
        load_vehicleid(tmp_path, num_trials=0)
    bad = folder / "train_test_split" / "train_list.txt"
    bad.write_text("0000001 1\n0000002 car\n")
    with pytest.raises(DatasetFormatError, match=re.escape(f"{bad}:2 is '0000002 car'")):
        load_vehicleid(tmp_path)
    (folder / "image").rmdir()
    with pytest.raises(DatasetLayoutError, match="has no 'image'"):
        load_vehicleid(tmp_path)


# ---------------------------------------------------------------- LUPerson

LUP_FILES = ["scene1/a.jpg", "scene1/b.png", "scene2/deep/c.jpg", "d.jpeg"]


def test_luperson_recursive_and_unlabelled(tmp_path: Path) -> None:
    folder = write_luperson(tmp_path, LUP_FILES)
    (folder / "scene1" / "readme.txt").write_text("not an image")
    data = load_luperson(tmp_path)
    assert sorted(Path(r.path).relative_to(folder).as_posix() for r in data.train) == sorted(LUP_FILES)
    assert all(r.pid == UNLABELLED and r.camid == 0 for r in data.train)
    assert data.query == [] and data.gallery == []
    assert load_luperson(folder).train == data.train  # dataset folder or its parent


def test_luperson_keep_list_restricts_and_keeps_order(tmp_path: Path) -> None:
    folder = write_luperson(tmp_path, LUP_FILES)
    keep = tmp_path / "keep.txt"
    keep.write_text("# CFS top 2\nscene2/deep/c.jpg\n\nscene1/a.jpg\n")
    data = load_luperson(tmp_path, keep_list=keep)
    assert [r.path for r in data.train] == [str(folder / "scene2/deep/c.jpg"), str(folder / "scene1/a.jpg")]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ("scene1/a.jpg\n../x.jpg\n", ":2 is '../x.jpg'; expected an image path relative"),
        ("/abs/a.jpg\n", ":1 is '/abs/a.jpg'"),
        ("scene1/a.txt\n", ":1 is 'scene1/a.txt'"),
        ("scene1/a.jpg\nscene1/a.jpg\n", ":2 repeats 'scene1/a.jpg' (first at "),
        ("scene1/a.jpg\nscene9/z.jpg\n", "LUPerson/scene9, which does not exist"),
        ("# only a comment\n", "is empty"),
    ],
)
def test_luperson_bad_keep_list(tmp_path: Path, lines: str, expected: str) -> None:
    write_luperson(tmp_path, LUP_FILES)
    keep = tmp_path / "keep.txt"
    keep.write_text(lines)
    with pytest.raises((DatasetFormatError, DatasetLayoutError)) as error:
        load_luperson(tmp_path, keep_list=keep)
    assert expected in str(error.value) and str(keep) in str(error.value)


def test_luperson_empty_tree(tmp_path: Path) -> None:
    (tmp_path / "LUPerson" / "scene").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="is empty: no image"):
        load_luperson(tmp_path)


# ---------------------------------------------------------------- user folders

FOLDER_TREE = {
    "train": ["0005_c3_x.jpg", "0005_c1_y.jpg", "sub/0009_c3_z.jpg"],
    "query": ["0005_c1_q.jpg", "-1_c1_junk.jpg"],
    "gallery": ["0005_c3_g.jpg", "0011_c1_g.jpg"],
}


def test_folder_regex_labels(tmp_path: Path) -> None:
    write_folder_dataset(tmp_path, FOLDER_TREE)
    data = load_folder(tmp_path / "my_data", name_pattern=r"(?P<pid>-?\d+)_c(?P<camid>\d+)")
    # cameras {1, 3} -> {0, 1}; train ids {5, 9} -> {0, 1}; junk (-1) dropped; sorted by path
    assert [(Path(r.path).name, r.pid, r.camid) for r in data.train] == [
        ("0005_c1_y.jpg", 0, 0),
        ("0005_c3_x.jpg", 0, 1),
        ("0009_c3_z.jpg", 1, 1),
    ]
    assert [(r.pid, r.camid) for r in data.query] == [(5, 0)]
    assert [(r.pid, r.camid) for r in data.gallery] == [(5, 1), (11, 0)]


def test_folder_regex_errors(tmp_path: Path) -> None:
    folder = write_folder_dataset(tmp_path, FOLDER_TREE)
    with pytest.raises(ValueError, match=r"lacks the named group\(s\) \['camid'\]"):
        load_folder(folder, name_pattern=r"(?P<pid>\d+)")
    (folder / "gallery" / "noise.jpg").write_bytes(b"")
    with pytest.raises(DatasetFormatError, match=r"file name .*gallery/noise\.jpg does not match"):
        load_folder(folder, name_pattern=r"(?P<pid>\d+)_c(?P<camid>\d+)")
    with pytest.raises(ValueError, match="exactly one of name_pattern and labels_csv"):
        load_folder(folder)
    with pytest.raises(
        DatasetLayoutError,
        match=r"has no 'train'; expected <root>/\{train,query,gallery\} \(found: my_data/\)",
    ):
        load_folder(tmp_path, name_pattern=r"(?P<pid>\d+)_c(?P<camid>\d+)")


CSV_TREE = {"train": ["a.jpg", "b.jpg"], "query": ["q.jpg"], "gallery": ["g1.jpg", "g2.jpg"]}
CSV_ROWS = ["train/a.jpg,3,camB,1", "train/b.jpg,8,camA,0", "query/q.jpg,3,camA,1", "gallery/g1.jpg,3,camB,0"]


def test_folder_csv_labels_with_header_and_views(tmp_path: Path) -> None:
    folder = write_folder_dataset(tmp_path, CSV_TREE)
    labels = folder / "labels.csv"
    labels.write_text("\n".join(["path,pid,camid,viewid", *CSV_ROWS, "gallery/g2.jpg,-1,camA,0"]) + "\n")
    data = load_folder(folder, labels_csv=labels)
    assert [(r.pid, r.camid, r.viewid) for r in data.train] == [(0, 1, 1), (1, 0, 0)]  # camA -> 0, camB -> 1
    assert [(r.pid, r.camid, r.viewid) for r in data.query] == [(3, 0, 1)]
    assert [(Path(r.path).name, r.pid) for r in data.gallery] == [("g1.jpg", 3)]  # g2 is junk
    assert data.num_views == 2


def test_folder_csv_errors(tmp_path: Path) -> None:
    folder = write_folder_dataset(tmp_path, CSV_TREE)
    labels = folder / "labels.csv"
    labels.write_text("\n".join(CSV_ROWS) + "\n")
    with pytest.raises(DatasetFormatError, match=r"image .*g2\.jpg has no row 'gallery/g2\.jpg,\.\.\.'"):
        load_folder(folder, labels_csv=labels)
    labels.write_text("\n".join([*CSV_ROWS, "gallery/g2.jpg,1,camA", "gallery/g3.jpg,1,camA"]) + "\n")
    with pytest.raises(
        DatasetFormatError, match=r"labels\.csv:6 names 'gallery/g3\.jpg', which is not an image"
    ):
        load_folder(folder, labels_csv=labels)
    labels.write_text("\n".join([*CSV_ROWS, "gallery/g2.jpg,x,camA"]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"pid 'x' in .*labels\.csv:5 is not an integer"):
        load_folder(folder, labels_csv=labels)
    labels.write_text("\n".join([*CSV_ROWS, "gallery/g2.jpg,1"]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"labels\.csv:5 has 2 fields"):
        load_folder(folder, labels_csv=labels)
