"""Parsers of the benchmark releases: Market-1501, DukeMTMC-reID, Occluded-Duke, MSMT17, VeRi-776."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from reid.data.datasets import (
    DatasetFormatError,
    DatasetLayoutError,
    load_dukemtmc,
    load_market1501,
    load_msmt17,
    load_occluded_duke,
    load_veri776,
)
from reid.data.records import Record

from .trees import (
    MSMT_SPEC,
    duke_name,
    market_name,
    veri_name,
    write_dukemtmc,
    write_market1501,
    write_msmt17,
    write_veri776,
    write_veri_views,
)


def names(records: list[Record]) -> list[str]:
    return [Path(r.path).name for r in records]


# ---------------------------------------------------------------- Market-1501


def test_market_counts_junk_distractors_and_relabel(tmp_path: Path) -> None:
    write_market1501(tmp_path)
    data = load_market1501(tmp_path)
    # train: 7 files, minus one distractor (0) and one junk (-1); ids 2 -> 0, 7 -> 1.
    assert [r.pid for r in data.train] == [0, 0, 1, 1, 1]
    assert [r.camid for r in data.train] == [0, 1, 2, 2, 4]
    assert data.num_train_pids == 2
    assert [(r.pid, r.camid) for r in data.query] == [(2, 0), (7, 2)]
    # gallery: junk (-1) dropped, both distractors (0) kept, original pids kept.
    assert sorted((r.pid, r.camid) for r in data.gallery) == [(0, 0), (0, 1), (2, 1), (2, 5), (7, 3)]
    assert all(r.pid != -1 for r in [*data.train, *data.query, *data.gallery])
    assert data.num_cameras == 6 and data.num_views == 1
    assert "Thumbs.db" not in names(data.gallery)
    assert all(Path(r.path).is_file() for r in [*data.train, *data.query, *data.gallery])


def test_market_accepts_dataset_folder_or_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_market1501(tmp_path)
    from_parent, from_folder = load_market1501(tmp_path), load_market1501(str(folder))
    assert from_parent.train == from_folder.train and from_parent.gallery == from_folder.gallery
    monkeypatch.chdir(tmp_path)
    relative = load_market1501("Market-1501-v15.09.15")
    assert relative.train == from_parent.train and Path(relative.train[0].path).is_absolute()


def test_error_classes_are_standard_exceptions() -> None:
    assert issubclass(DatasetLayoutError, FileNotFoundError) and issubclass(DatasetFormatError, ValueError)


def test_missing_root_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=re.escape(str(tmp_path / "nope"))):
        load_market1501(tmp_path / "nope")


def test_missing_split_folder_lists_expected_and_found(tmp_path: Path) -> None:
    folder = write_market1501(tmp_path)
    (folder / "query").rename(folder / "queries")
    (folder / "notes.txt").write_text("x")
    with pytest.raises(DatasetLayoutError) as error:
        load_market1501(tmp_path)
    message = str(error.value)
    assert f"Market-1501 root {folder} has no 'query'" in message
    assert "<root>/{bounding_box_train,query,bounding_box_test}" in message
    assert "found: bounding_box_test/, bounding_box_train/, notes.txt, queries/" in message


def test_empty_split_says_so(tmp_path: Path) -> None:
    folder = write_market1501(tmp_path)
    for path in (folder / "query").iterdir():
        path.unlink()
    with pytest.raises(DatasetLayoutError, match=f"split {re.escape(str(folder / 'query'))} is empty"):
        load_market1501(folder)


def test_split_of_only_junk_is_an_error(tmp_path: Path) -> None:
    spec = {"bounding_box_train": [(-1, 1), (0, 2)], "query": [(2, 1)], "bounding_box_test": [(2, 2)]}
    write_market1501(tmp_path, spec)
    with pytest.raises(DatasetLayoutError, match="bounding_box_train holds 2 images but none"):
        load_market1501(tmp_path)


@pytest.mark.parametrize(
    ("bad_name", "expected"),
    [
        ("0002_c1_000451_03.jpg", "does not match the expected format"),
        ("abcd_c1s1_000451_03.jpg", "does not match the expected format"),
        ("0002_c1s1_000451_03.png", "does not match the expected format"),
        (market_name(2, 7, 99), "camera 7 out of range [1, 6]"),
        (market_name(1502, 1, 99), "identity 1502 out of range [-1, 1501]"),
    ],
)
def test_market_bad_file_names_name_the_file(tmp_path: Path, bad_name: str, expected: str) -> None:
    folder = write_market1501(tmp_path)
    (folder / "query" / bad_name).write_bytes(b"")
    with pytest.raises(DatasetFormatError) as error:
        load_market1501(tmp_path)
    assert expected in str(error.value)
    assert str(folder / "query" / bad_name) in str(error.value)


# ---------------------------------------------------------------- DukeMTMC-reID and Occluded-Duke


def test_duke_parses_and_zero_bases_cameras(tmp_path: Path) -> None:
    write_dukemtmc(tmp_path)
    data = load_dukemtmc(tmp_path)
    assert [(r.pid, r.camid) for r in data.train] == [(0, 0), (0, 7), (1, 1), (2, 2)]
    assert [(r.pid, r.camid) for r in data.query] == [(1, 1), (5, 7)]
    assert [(r.pid, r.camid) for r in data.gallery] == [(1, 0), (5, 2), (11, 6)]
    assert data.num_cameras == 8 and data.info.num_classes == 3


def test_duke_camera_out_of_range(tmp_path: Path) -> None:
    folder = write_dukemtmc(tmp_path)
    (folder / "bounding_box_test" / duke_name(3, 9, 1)).write_bytes(b"")
    with pytest.raises(
        DatasetFormatError, match=r"camera 9 out of range \[1, 8\] in file .*0003_c9_f0000001"
    ):
        load_dukemtmc(tmp_path)


def test_occluded_duke_uses_its_own_folder_name(tmp_path: Path) -> None:
    write_dukemtmc(tmp_path, folder_name="Occluded_Duke")
    data = load_occluded_duke(tmp_path)
    assert data.name == "Occluded-Duke" and len(data.train) == 4
    with pytest.raises(DatasetLayoutError, match="DukeMTMC-reID root"):
        load_dukemtmc(tmp_path)  # a Duke loader does not pick up the Occluded_Duke folder


# ---------------------------------------------------------------- MSMT17


@pytest.mark.parametrize(
    ("version", "train_dir", "test_dir"), [("V1", "train", "test"), ("V2", "mask_train_v2", "mask_test_v2")]
)
def test_msmt17_both_releases(tmp_path: Path, version: str, train_dir: str, test_dir: str, caplog) -> None:
    folder = write_msmt17(tmp_path, version)
    with caplog.at_level("WARNING", logger="reid"):
        data = load_msmt17(tmp_path)
    warned = [r.getMessage() for r in caplog.records if "V2 release" in r.getMessage()]
    assert len(warned) == (version == "V2")  # the published numbers are V1's: one line says so
    if warned:
        assert str(folder) in warned[0] and "1.7 and 3.9 mAP less" in warned[0]
    # train = list_train (ids 0, 3) + list_val (id 5), relabelled 0, 1, 2; camera = 3rd field - 1.
    assert [(r.pid, r.camid) for r in data.train] == [(0, 0), (0, 1), (1, 14), (2, 3), (2, 5)]
    assert [(r.pid, r.camid) for r in data.query] == [(0, 0), (1, 8)]
    assert [(r.pid, r.camid) for r in data.gallery] == [(0, 2), (1, 13), (2, 1)]
    assert all(Path(r.path).is_relative_to(folder / train_dir) for r in data.train)
    assert all(Path(r.path).is_relative_to(folder / test_dir) for r in [*data.query, *data.gallery])
    assert all(Path(r.path).is_file() for r in [*data.train, *data.query, *data.gallery])
    assert load_msmt17(folder).train == data.train


def test_msmt17_accepts_transreid_folder_name(tmp_path: Path) -> None:
    write_msmt17(tmp_path).rename(tmp_path / "MSMT17")
    assert len(load_msmt17(tmp_path).query) == 2


def test_msmt17_without_image_folders(tmp_path: Path) -> None:
    folder = write_msmt17(tmp_path)
    (folder / "test").rename(folder / "testing")
    with pytest.raises(DatasetLayoutError, match="neither 'train'\\+'test' \\(V1\\) nor 'mask_train_v2'"):
        load_msmt17(tmp_path)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("0000/0000_000_01_0303morning_0015_0.jpg", "expected '<folder>/<file name> <pid>'"),
        ("0000/0000_000_01_0303morning_0015_0.jpg x", "expected '<folder>/<file name> <pid>'"),
        ("0000/0000_morning.jpg 0", "no camera number in its third '_' field"),
        ("0000/0000_000_16_0303morning_0015_0.jpg 0", r"camera 16 out of range \[1, 15\]"),
    ],
)
def test_msmt17_bad_list_lines_name_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    folder = write_msmt17(tmp_path)
    query_list = folder / "list_query.txt"
    query_list.write_text(query_list.read_text() + line + "\n")
    with pytest.raises(DatasetFormatError, match=expected) as error:
        load_msmt17(tmp_path)
    assert f"{query_list}:{len(MSMT_SPEC['query']) + 1}" in str(error.value)


def test_msmt17_empty_list(tmp_path: Path) -> None:
    folder = write_msmt17(tmp_path)
    (folder / "list_val.txt").write_text("\n")
    with pytest.raises(DatasetLayoutError, match=r"list_val\.txt is empty"):
        load_msmt17(tmp_path)


def test_msmt17_full_scale_lists_parse_fast(tmp_path: Path) -> None:
    """126k list lines (the real size) parse from names alone, without touching image files."""
    folder = tmp_path / "MSMT17_V1"
    for sub in ("train", "test"):
        (folder / sub).mkdir(parents=True)
    sizes = {"train": 30248, "val": 2373, "query": 11659, "gallery": 82161}
    for split, size in sizes.items():
        lines = (
            f"{i % 1000:04d}/{i % 1000:04d}_{i:03d}_{i % 15 + 1:02d}_0303morning_0015_0.jpg {i % 1000}"
            for i in range(size)
        )
        (folder / f"list_{split}.txt").write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    data = load_msmt17(folder)
    elapsed = time.perf_counter() - start
    assert (len(data.train), len(data.query), len(data.gallery)) == (32621, 11659, 82161)
    assert data.num_cameras == 15
    assert elapsed < 10.0, f"parsing took {elapsed:.1f}s"


# ---------------------------------------------------------------- VeRi-776


def test_veri_parses_twenty_cameras(tmp_path: Path) -> None:
    write_veri776(tmp_path)
    data = load_veri776(tmp_path)
    assert [(r.pid, r.camid) for r in data.train] == [(0, 0), (0, 19), (1, 4), (1, 5), (2, 1)]
    assert [(r.pid, r.camid) for r in data.query] == [(2, 2), (6, 10)]
    assert [(r.pid, r.camid) for r in data.gallery] == [(2, 3), (2, 12), (6, 0)]
    assert data.num_cameras == 20 and data.num_views == 1


def test_veri_camera_out_of_range(tmp_path: Path) -> None:
    folder = write_veri776(tmp_path)
    (folder / "image_test" / veri_name(3, 21, 5)).write_bytes(b"")
    with pytest.raises(DatasetFormatError, match=r"camera 21 out of range \[1, 20\] in file .*0003_c021"):
        load_veri776(tmp_path)


def test_veri_view_labels_attach_and_drop_unlabelled(tmp_path: Path) -> None:
    folder = write_veri776(tmp_path)
    train_names = sorted(p.name for p in (folder / "image_train").iterdir())
    test_names = sorted(p.name for p in (folder / "image_query").iterdir())
    test_names += sorted(p.name for p in (folder / "image_test").iterdir())
    train_file = write_veri_views(tmp_path / "keypoint_train.txt", dict(zip(train_names[:4], [0, 3, 7, 5])))
    test_file = write_veri_views(tmp_path / "keypoint_test.txt", dict.fromkeys(test_names, 2), "image_test")
    data = load_veri776(tmp_path, view_files=[train_file, test_file])
    assert [r.viewid for r in data.train] == [0, 3, 7, 5]  # the fifth train image has no label: dropped
    assert names(data.train) == train_names[:4]
    assert {r.viewid for r in [*data.query, *data.gallery]} == {2}
    assert data.num_views == 8
    with pytest.raises(DatasetFormatError, match=f"image .*{train_names[4]} has no view label"):
        load_veri776(tmp_path, view_files=[train_file, test_file], missing_view="error")


def test_veri_view_file_errors(tmp_path: Path) -> None:
    write_veri776(tmp_path)
    bad = tmp_path / "keypoint_train.txt"
    bad.write_text("image_train/0001_c001_00000001_0.jpg 1 2 front\n")
    with pytest.raises(DatasetFormatError, match=re.escape(f"{bad}:1")):
        load_veri776(tmp_path, view_files=[bad])
    with pytest.raises(DatasetLayoutError, match=r"view label file .*missing\.txt does not exist"):
        load_veri776(tmp_path, view_files=[tmp_path / "missing.txt"])
    with pytest.raises(ValueError, match="missing_view='skip'"):
        load_veri776(tmp_path, missing_view="skip")
