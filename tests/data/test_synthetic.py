"""The synthetic Market-1501 tree: layout, protocol, determinism, marker, rendering, learnability."""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid.data.synthetic import MARKER_NAME, SyntheticSpec, generate_market_tree, load_synthetic
from reid.data.synthetic import tree as tree_module
from reid.data.synthetic.__main__ import main as cli_main
from reid.data.synthetic.appearance import BAG_KINDS, LOWER_KINDS, PATTERNS, View, sample_identity
from reid.data.synthetic.render import CROP_HEIGHT, CROP_WIDTH, Pose, draw_person

TINY = dict(num_train_ids=8, num_test_ids=6, num_cameras=3, images_per_id=6, num_distractors=5, num_junk=4)
MARKET_NAME = re.compile(r"(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg")
FOLDERS = ("bounding_box_train", "query", "bounding_box_test")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return generate_market_tree(tmp_path_factory.mktemp("syn") / "tiny", **TINY)


def _names(root: Path) -> dict[str, list[tuple[int, int]]]:
    """(pid, 1-based camera) of every file per folder, checking each name against Market's format."""
    found = {}
    for folder in FOLDERS:
        entries = []
        for path in sorted((root / folder).iterdir()):
            match = MARKET_NAME.fullmatch(path.name)
            assert match, f"{path.name} is not a Market-1501 file name"
            entries.append((int(match[1]), int(match[2])))
        found[folder] = entries
    return found


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tree_follows_the_market_layout_and_protocol(tiny_root):
    names = _names(tiny_root)
    train_pids = {pid for pid, _ in names["bounding_box_train"]}
    assert train_pids == set(range(1, 9))
    assert len(names["bounding_box_train"]) == 8 * 6
    test_pids = set(range(9, 15))
    assert {pid for pid, _ in names["query"]} == test_pids
    gallery_pids = [pid for pid, _ in names["bounding_box_test"]]
    assert set(gallery_pids) == test_pids | {0, -1}
    assert gallery_pids.count(0) == 5 and gallery_pids.count(-1) == 4
    assert all(1 <= cam <= 3 for entries in names.values() for _, cam in entries)
    # Each test identity has all 6 images split between query (one per camera) and gallery.
    for pid in test_pids:
        query_cams = [cam for p, cam in names["query"] if p == pid]
        assert len(query_cams) == len(set(query_cams)) <= 3
        assert len(query_cams) + gallery_pids.count(pid) == 6
    all_names = [p.name for f in FOLDERS for p in (tiny_root / f).iterdir()]
    assert len(all_names) == len(set(all_names))


def test_every_query_has_a_true_match_in_another_camera(tiny_root):
    names = _names(tiny_root)
    gallery_cams = defaultdict(set)
    for pid, cam in names["bounding_box_test"]:
        gallery_cams[pid].add(cam)
    for pid, cam in names["query"]:
        assert gallery_cams[pid] - {cam}, f"query {pid} c{cam} has no gallery image in another camera"
        # The camera of each query also holds gallery images of that person (same-camera ones are ignored).
        assert cam in gallery_cams[pid]


def test_images_are_market_sized_rgb_jpegs(tiny_root):
    for folder in FOLDERS:
        path = next((tiny_root / folder).iterdir())
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (CROP_WIDTH, CROP_HEIGHT))


def test_load_synthetic_parses_the_tree_with_the_market_parser(tiny_root):
    dataset = load_synthetic(tiny_root, **TINY)
    assert dataset.name == "synthetic"
    assert dataset.info.num_classes == 8 and dataset.num_cameras == 3
    assert sorted({r.pid for r in dataset.train}) == list(range(8))  # relabelled
    assert len(dataset.train) == 48
    names = _names(tiny_root)
    assert len(dataset.query) == len(names["query"])
    assert len(dataset.gallery) == len(names["bounding_box_test"]) - 4  # junk dropped
    assert sum(r.pid == 0 for r in dataset.gallery) == 5  # distractors kept


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path, tiny_root):
    small = {**TINY, "num_test_ids": 2, "num_train_ids": 2}
    first = _tree_bytes(generate_market_tree(tmp_path / "a", **small))
    again = _tree_bytes(generate_market_tree(tmp_path / "b", **small))
    other = _tree_bytes(generate_market_tree(tmp_path / "c", **small, seed=1))
    assert first == again
    images = [k for k in first if k.endswith(".jpg")]
    assert images and sum(first[k] != other.get(k) for k in images) > 0.9 * len(images)


def test_identities_cover_every_kind_of_clothing_and_accessory():
    people = [sample_identity(np.random.default_rng([0, 0, pid])) for pid in range(300)]
    assert {p.upper_pattern for p in people} == set(PATTERNS)
    assert {p.lower_kind for p in people} == set(LOWER_KINDS)
    assert {p.bag_kind for p in people} == set(BAG_KINDS)
    assert 0.1 < np.mean([p.hat is not None for p in people]) < 0.5
    assert 0.1 < np.mean([p.logo is not None for p in people]) < 0.6
    uppers = np.stack([p.upper for p in people])
    assert np.all((uppers >= 0) & (uppers <= 1)) and uppers.std(0).min() > 0.15
    # Shared palette: plenty of people look alike in top colour alone (the task is not trivial).
    close = np.abs(uppers[:, None] - uppers[None]).max(-1) < 0.1
    assert close.sum(1).mean() > 10


def test_marker_reuses_a_matching_tree_and_regenerates_on_new_parameters(tmp_path, monkeypatch):
    root = tmp_path / "syn"
    small = {**TINY, "num_train_ids": 2, "num_test_ids": 2}
    load_synthetic(root, **small)
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["num_train_ids"] == 2 and marker["seed"] == 0

    calls = []
    real_generate = tree_module.generate_market_tree
    monkeypatch.setattr(
        tree_module, "generate_market_tree", lambda *a, **k: calls.append(k) or real_generate(*a, **k)
    )
    load_synthetic(root, **small)
    assert calls == []  # complete and matching: reused
    dataset = load_synthetic(root, **{**small, "num_train_ids": 3})
    assert len(calls) == 1 and dataset.info.num_classes == 3
    assert json.loads((root / MARKER_NAME).read_text())["num_train_ids"] == 3
    (root / MARKER_NAME).unlink()  # a tree without marker is incomplete, and not ours to delete
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        load_synthetic(root, **small)


@pytest.mark.parametrize("added", ["notes.txt", "query/0099_c1s1_000001_01.jpg", "extra/img.png"])
def test_regenerating_refuses_to_delete_files_it_did_not_write(tmp_path, added):
    """A user's notes or images inside a generated tree survive a regeneration with new parameters."""
    small = {**TINY, "num_train_ids": 2, "num_test_ids": 2}
    root = generate_market_tree(tmp_path / "syn", **small)
    (root / added).parent.mkdir(exist_ok=True)
    (root / added).write_text("the user's")
    with pytest.raises(
        FileExistsError, match=rf"{re.escape(str(root))} holds 1 file.*e\.g\. {re.escape(added)}"
    ):
        generate_market_tree(root, **{**small, "num_train_ids": 3})
    assert (root / added).read_text() == "the user's"
    (root / added).unlink()
    assert generate_market_tree(root, **{**small, "num_train_ids": 3}) == root  # only its own files: replaced
    assert json.loads((root / MARKER_NAME).read_text())["num_train_ids"] == 3


def test_generating_an_existing_identical_tree_keeps_its_files(tmp_path):
    small = {**TINY, "num_train_ids": 2, "num_test_ids": 2}
    root = generate_market_tree(tmp_path / "syn", **small)
    sentinel = root / "query" / "sentinel.txt"
    sentinel.write_text("written by the first process")
    generate_market_tree(root, **small)  # e.g. a second DDP rank that rendered the same tree
    assert sentinel.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["syn"]  # its staging folder was removed


def test_an_interrupted_generation_leaves_no_tree(tmp_path, monkeypatch):
    count = {"n": 0}

    def failing_render(self, item):
        count["n"] += 1
        if count["n"] > 5:
            raise KeyboardInterrupt
        return b"not a jpeg"

    monkeypatch.setattr(tree_module._Renderer, "__call__", failing_render)
    with pytest.raises(KeyboardInterrupt):
        generate_market_tree(tmp_path / "syn", **TINY)
    assert list(tmp_path.iterdir()) == []  # neither the root nor the staging folder


@pytest.mark.parametrize(
    ("key", "value"),
    [("num_cameras", 7), ("num_cameras", 1), ("images_per_id", 3), ("num_test_ids", 0), ("num_junk", -1)],
)
def test_bad_parameters_raise_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        SyntheticSpec(**{**TINY, key: value})


def test_identities_must_fit_the_market_id_range():
    SyntheticSpec(num_train_ids=1000, num_test_ids=501)
    with pytest.raises(ValueError, match="at most 1501"):
        SyntheticSpec(num_train_ids=1000, num_test_ids=502)


def test_generation_is_fast(tmp_path):
    start = time.perf_counter()
    generate_market_tree(tmp_path / "syn", **TINY)  # ~100 images
    assert time.perf_counter() - start < 5.0


def _person(**changes):
    base = sample_identity(np.random.default_rng(0))
    fields = {**base.__dict__, **changes}
    return type(base)(**fields)


def _render(person, view: View) -> np.ndarray:
    image = np.zeros((CROP_HEIGHT, CROP_WIDTH, 3), dtype=np.float32)
    draw_person(image, person, Pose(view, CROP_WIDTH / 2, 8.0, 112.0, stride=0.2, arm_swing=0.1))
    return image


def _pixels_of(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.all(np.isclose(image, colour), axis=-1)


def test_viewpoint_changes_what_is_visible():
    logo = np.array([0.123, 0.456, 0.789], dtype=np.float32)
    bag = np.array([0.321, 0.654, 0.987], dtype=np.float32)
    backpacker = _person(logo=logo, bag=bag, bag_kind="backpack", upper_pattern="plain")
    front, back = _render(backpacker, View.FRONT), _render(backpacker, View.BACK)
    assert _pixels_of(front, logo).sum() > 20 and _pixels_of(back, logo).sum() == 0
    assert _pixels_of(back, bag).sum() > 3 * _pixels_of(front, bag).sum() > 0
    # A shoulder bag on the person's right hangs on the image's left from the front, right from behind.
    shoulder = _person(logo=None, bag=bag, bag_kind="shoulder", bag_side=1)
    cols_front = np.nonzero(_pixels_of(_render(shoulder, View.FRONT), bag)[70:])[1]
    cols_back = np.nonzero(_pixels_of(_render(shoulder, View.BACK), bag)[70:])[1]
    assert cols_front.mean() < CROP_WIDTH / 2 < cols_back.mean()
    # Seen from its left side the right-hand bag is hidden; from the right side it shows.
    assert _pixels_of(_render(shoulder, View.LEFT), bag).sum() == 0
    assert _pixels_of(_render(shoulder, View.RIGHT), bag).sum() > 20


def test_person_fills_the_crop_like_a_detection_box():
    mask = np.any(_render(_person(), View.FRONT) > 0, axis=-1)
    rows, cols = np.nonzero(mask)
    assert rows.min() < 15 and rows.max() > 110  # head near the top, feet near the bottom
    assert abs(cols.mean() - CROP_WIDTH / 2) < 4 and cols.max() - cols.min() < CROP_WIDTH


def _mean_average_precision(query, gallery, q_pids, q_cams, g_pids, g_cams) -> float:
    """Reference loop: Market protocol (same pid and camera removed), Euclidean ranking."""
    aps = []
    for i in range(len(query)):
        order = np.argsort(((gallery - query[i]) ** 2).sum(1), kind="stable")
        order = order[~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))]
        matches = g_pids[order] == q_pids[i]
        if matches.any():
            ranks = np.flatnonzero(matches) + 1
            aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return 100.0 * float(np.mean(aps))


def test_colour_retrieval_is_learnable_but_not_trivial(tmp_path):
    """Mean colours of horizontal bands of the person, standardised per camera, retrieve people well
    above chance but far from perfectly; without removing the camera style they do much worse."""
    spec = dict(
        num_train_ids=1, num_test_ids=24, num_cameras=4, images_per_id=6, num_distractors=10, num_junk=0
    )
    dataset = load_synthetic(tmp_path / "syn", **spec)
    records = dataset.query + dataset.gallery
    pids = np.array([r.pid for r in records])
    cams = np.array([r.camid for r in records])
    images = np.stack([np.asarray(Image.open(r.path), dtype=np.float32) / 255 for r in records])
    bands = (
        images[:, :, 20:44].reshape(len(records), 8, 16, 24, 3).mean(axis=(2, 3)).reshape(len(records), -1)
    )
    standardised = bands.copy()
    for cam in np.unique(cams):
        rows = cams == cam
        standardised[rows] = (bands[rows] - bands[rows].mean(0)) / (bands[rows].std(0) + 1e-3)
    nq = len(dataset.query)

    def score(features):
        return _mean_average_precision(
            features[:nq], features[nq:], pids[:nq], cams[:nq], pids[nq:], cams[nq:]
        )

    rng = np.random.default_rng(0)
    chance = np.mean([score(rng.normal(size=(len(records), 4))) for _ in range(5)])
    colour, raw = score(standardised), score(bands)
    assert chance < 12
    assert 3 * chance < colour < 80
    assert raw < colour - 10


def test_cli_writes_a_tree_and_reuses_it(tmp_path, capsys):
    args = ["--root", str(tmp_path / "cli"), "--train-ids", "2", "--test-ids", "2", "--cameras", "2"]
    cli_main([*args, "--images-per-id", "4", "--distractors", "1", "--junk", "1"])
    assert "wrote" in capsys.readouterr().out
    assert all((tmp_path / "cli" / f).is_dir() for f in FOLDERS)
    cli_main([*args, "--images-per-id", "4", "--distractors", "1", "--junk", "1"])
    assert "already holds" in capsys.readouterr().out
    image = next((tmp_path / "cli" / "query").iterdir())
    good = image.read_bytes()
    image.write_bytes(b"damaged")
    cli_main([*args, "--images-per-id", "4", "--distractors", "1", "--junk", "1", "--force"])
    assert "wrote" in capsys.readouterr().out
    assert image.read_bytes() == good
