"""The synthetic DukeMTMC-reID tree (domain B): layout and parser, protocol, determinism, a style other
than the Market tree's (domain A), identities disjoint from A's, and A left exactly as it was."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid.data.datasets.dukemtmc import load_dukemtmc
from reid.data.synthetic import (
    MARKER_NAME,
    DukeSpec,
    duke_tree,
    generate_duke_tree,
    generate_market_tree,
    layout,
    load_synthetic,
    load_synthetic_duke,
    luperson_tree,
)
from reid.data.synthetic.__main__ import main as cli_main
from reid.data.synthetic.appearance import (
    DUKE_CAMERAS,
    MARKET_CAMERAS,
    Identity,
    sample_camera,
    sample_identity,
)
from reid.data.synthetic.tree import remove_synthetic_tree

TINY_B = dict(num_train_ids=8, num_test_ids=6, num_cameras=8, images_per_id=6, num_distractors=10)
TINY_A = dict(num_train_ids=8, num_test_ids=6, num_cameras=3, images_per_id=6, num_distractors=10, num_junk=5)
DUKE_NAME = re.compile(r"(\d{4})_c(\d)_f(\d{7})\.jpg")
FOLDERS = ("bounding_box_train", "query", "bounding_box_test")


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> tuple[Path, Path]:
    """(tiny A root, tiny B root), rendered once for the module."""
    root = tmp_path_factory.mktemp("domains")
    return generate_market_tree(root / "a", **TINY_A), generate_duke_tree(root / "b", **TINY_B)


def _names(root: Path) -> dict[str, list[tuple[int, int]]]:
    """(pid, 1-based camera) of every file per split folder, checking each name against Duke's format."""
    found = {}
    for folder in FOLDERS:
        entries = []
        for path in sorted((root / "DukeMTMC-reID" / folder).iterdir()):
            match = DUKE_NAME.fullmatch(path.name)
            assert match, f"{path.name} is not a DukeMTMC-reID file name"
            entries.append((int(match[1]), int(match[2])))
        found[folder] = entries
    return found


def test_the_tree_is_a_duke_release_read_by_the_duke_parser(trees):
    _, root = trees
    assert sorted(p.name for p in root.iterdir()) == ["DukeMTMC-reID", MARKER_NAME]
    names = _names(root)
    assert {pid for pid, _ in names["bounding_box_train"]} == set(range(1, 9))
    assert {pid for pid, _ in names["query"]} == set(range(9, 15))
    gallery = [pid for pid, _ in names["bounding_box_test"]]
    distractors = set(range(15, 25))  # identities seen only in the gallery, one image each (no junk class)
    assert set(gallery) == set(range(9, 15)) | distractors and all(gallery.count(p) == 1 for p in distractors)
    assert {cam for entries in names.values() for _, cam in entries} == set(range(1, 9))

    dataset = load_synthetic_duke(root, **TINY_B)
    parsed = load_dukemtmc(root)  # from the root holding DukeMTMC-reID/, as for the release
    assert dataset.name == "synthetic_duke" and dataclasses.replace(parsed, name="synthetic_duke") == dataset
    assert dataset.num_cameras == 8 and dataset.info.num_classes == 8
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (
        48,
        len(names["query"]),
        len(gallery),
    )
    assert len(dataset.query) + len(dataset.gallery) == 6 * 6 + 10


def test_every_query_has_a_true_match_in_another_camera(trees):
    dataset = load_synthetic_duke(trees[1], **TINY_B)
    for query in dataset.query:
        assert any(g.pid == query.pid and g.camid != query.camid for g in dataset.gallery), query.path


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    small = {**TINY_B, "num_train_ids": 2, "num_test_ids": 2, "num_distractors": 2}

    def tree_bytes(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first = tree_bytes(generate_duke_tree(tmp_path / "a", **small))
    assert first == tree_bytes(generate_duke_tree(tmp_path / "b", **small))
    other = tree_bytes(generate_duke_tree(tmp_path / "c", **small, seed=1))
    images = [k for k in first if k.endswith(".jpg")]
    assert images and sum(first[k] != other.get(k) for k in images) > 0.9 * len(images)


def _pixels(root: Path) -> np.ndarray:
    """Every image of a tree as floats in [0, 1], [N, 128, 64, 3]."""
    paths = sorted(p for p in root.rglob("*.jpg"))
    return np.stack([np.asarray(Image.open(p), dtype=np.float32) / 255.0 for p in paths])


def test_domain_b_looks_measurably_other_than_domain_a(trees):
    """B's cameras are cool and bright: over every image of the tiny trees, B is brighter than A by more
    than 0.1 (measured here: A 0.45, B 0.64; demo size A 0.49, B 0.65) and its blue-minus-red mean is
    higher by more than 0.1 (here A -0.06, B +0.09; demo size A -0.09, B +0.10); the strips at the
    crop's sides (mostly scene, not person) differ likewise (here 0.47 vs 0.65, -0.04 vs +0.09), so the
    difference is in the scenes, not only in the people."""
    a, b = (_pixels(root) for root in trees)
    assert b.mean() - a.mean() > 0.1
    cast = lambda x: float((x[..., 2] - x[..., 0]).mean())  # noqa: E731
    assert cast(b) - cast(a) > 0.1
    sides = lambda x: np.concatenate([x[:, :, :6], x[:, :, -6:]], axis=2)  # noqa: E731
    assert sides(b).mean() - sides(a).mean() > 0.1 and cast(sides(b)) - cast(sides(a)) > 0.1
    camera_a = sample_camera(np.random.default_rng(0), 128, 64, MARKET_CAMERAS)
    camera_b = sample_camera(np.random.default_rng(0), 128, 64, DUKE_CAMERAS)
    assert camera_b.gain[2] >= 1.0 > camera_b.gain[0] and camera_b.brightness >= 0.0
    assert not np.allclose(camera_a.background.mean((0, 1)), camera_b.background.mean((0, 1)), atol=0.02)


def _vector(person: Identity) -> np.ndarray:
    """The continuous appearance parameters of a person (colours, shape), which no two draws share."""
    parts = [person.upper, person.upper_second, person.lower, person.shoes, person.skin, person.bag]
    return np.concatenate([*parts, [person.pattern_period, person.height, person.width]])


def test_identities_of_b_are_disjoint_from_a_and_from_the_luperson_pool():
    """B's identities are seeded [seed, 2000, 0, pid]; A's [seed, 0, pid] (distractors [seed, 4, index])
    and the LUPerson pool's [seed, 1000, 0, person]: the second seed word differs for every seed, so no
    stream is shared. Check it on the parameters: across 4 seeds, no B identity is within 1e-3 of an A,
    A-distractor or LUPerson identity, while identities of B are as far from A's as from each other."""
    assert duke_tree.STREAM_DUKE not in {
        layout.STREAM_IDENTITY, layout.STREAM_CAMERA, layout.STREAM_PLAN, layout.STREAM_IMAGE,
        layout.STREAM_DISTRACTOR, luperson_tree.STREAM_LUPERSON,
    }  # fmt: skip
    for seed in range(4):
        b = np.stack(
            [
                _vector(sample_identity(np.random.default_rng(duke_tree.identity_seed(seed, p))))
                for p in range(1, 121)
            ]
        )
        others = [
            np.random.default_rng([s, layout.STREAM_IDENTITY, p]) for s in range(4) for p in range(1, 121)
        ]
        others += [
            np.random.default_rng([s, layout.STREAM_DISTRACTOR, i]) for s in range(4) for i in range(60)
        ]
        others += [
            np.random.default_rng(luperson_tree.identity_seed(s, p)) for s in range(4) for p in range(60)
        ]
        a = np.stack([_vector(sample_identity(rng)) for rng in others])
        distance = np.linalg.norm(b[:, None] - a[None], axis=-1)
        assert distance.min() > 1e-3
        within = np.linalg.norm(b[:, None] - b[None], axis=-1)[~np.eye(len(b), dtype=bool)]
        assert np.median(distance) > 0.8 * np.median(within)


def test_domain_a_draws_are_those_of_before_the_camera_prior():
    """Domain A must stay byte-identical (the demo's mAP rests on it): the default prior draws exactly
    what sample_camera drew before it took a prior (the ranges written out here, in their order)."""
    rng = np.random.default_rng([0, layout.STREAM_CAMERA, 2])
    camera = sample_camera(np.random.default_rng([0, layout.STREAM_CAMERA, 2]), 128, 64)
    views = rng.dirichlet(np.full(4, 0.8))
    expected = [rng.uniform(0.65, 1.35, 3).astype(np.float32)]
    expected += [
        rng.uniform(0.6, 1.3),
        rng.uniform(-0.15, 0.15),
        rng.uniform(0.7, 1.4),
        rng.uniform(-0.35, 0.35),
    ]
    expected += [rng.uniform(0.3, 1.3), rng.uniform(0.0, 0.05), int(rng.integers(55, 95))]
    got = [camera.gain, camera.contrast, camera.brightness, camera.gamma, camera.light_slope]
    got += [camera.blur_radius, camera.noise_sigma, camera.jpeg_quality]
    assert np.array_equal(got[0], expected[0]) and got[1:] == expected[1:]
    np.testing.assert_array_equal(camera.view_probs, 0.7 * views + 0.3 / 4)


def test_the_market_tree_is_unchanged_beside_a_duke_tree(tmp_path, trees):
    a, _ = trees
    dataset = load_synthetic(a, **TINY_A)
    assert dataset.num_cameras == 3 and len(dataset.train) == 48
    again = generate_market_tree(tmp_path / "a", **TINY_A)
    assert all((again / p.relative_to(a)).read_bytes() == p.read_bytes() for p in a.rglob("*.jpg"))


def test_bad_parameters_raise_naming_the_key():
    with pytest.raises(ValueError, match="num_cameras=9; expected at most 8"):
        DukeSpec(num_train_ids=4, num_test_ids=4, num_cameras=9)
    with pytest.raises(ValueError, match="num_distractors=-1"):
        DukeSpec(num_train_ids=4, num_test_ids=4, num_distractors=-1)
    with pytest.raises(ValueError, match="at most 9999"):
        DukeSpec(num_train_ids=5000, num_test_ids=4900, num_distractors=100)


def test_regenerating_replaces_its_own_tree_but_not_foreign_files(tmp_path):
    small = {**TINY_B, "num_train_ids": 2, "num_test_ids": 2, "num_distractors": 1}
    root = generate_duke_tree(tmp_path / "b", **small)
    generate_duke_tree(root, **{**small, "num_train_ids": 3})
    assert {pid for pid, _ in _names(root)["bounding_box_train"]} == {1, 2, 3}
    (root / "DukeMTMC-reID" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        remove_synthetic_tree(root)


def test_cli_writes_a_duke_tree_and_refuses_junk(tmp_path, capsys):
    args = [
        "--duke",
        "--root",
        str(tmp_path / "b"),
        "--train-ids",
        "2",
        "--test-ids",
        "2",
        "--distractors",
        "1",
    ]
    cli_main(args)
    assert "wrote" in capsys.readouterr().out
    assert len(_names(tmp_path / "b")["bounding_box_train"]) == 2 * 12
    cli_main(args)
    assert "already holds" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main([*args, "--junk", "3"])
    assert "no junk class" in capsys.readouterr().err
