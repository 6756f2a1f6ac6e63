"""The synthetic LUPerson-like tree: scene layout, real parser, determinism, reuse, disjoint people."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid.data.datasets.luperson import load_luperson
from reid.data.records import UNLABELLED
from reid.data.synthetic import (
    MARKER_NAME,
    LUPersonSpec,
    SyntheticSpec,
    generate_luperson_tree,
    load_synthetic_luperson,
)
from reid.data.synthetic import luperson_tree as lup_module
from reid.data.synthetic import tree as tree_module
from reid.data.synthetic.__main__ import main as cli_main
from reid.data.synthetic.appearance import Identity, sample_identity
from reid.data.synthetic.layout import (
    STREAM_CAMERA,
    STREAM_DISTRACTOR,
    STREAM_IDENTITY,
    STREAM_IMAGE,
    STREAM_PLAN,
)
from reid.data.synthetic.luperson_tree import STREAM_LUPERSON, identity_seed, plan_scenes
from reid.data.synthetic.render import CROP_HEIGHT, CROP_WIDTH

TINY = dict(num_images=40, num_scenes=10, num_identities=15, seed=0)
SCENE_FOLDER = re.compile(r"scene_(\d{5})")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return generate_luperson_tree(tmp_path_factory.mktemp("lup") / "tiny", **TINY)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tree_is_scene_folders_of_crops_parsed_by_the_luperson_parser(tiny_root):
    scenes = sorted(p for p in tiny_root.iterdir() if p.is_dir())
    assert [SCENE_FOLDER.fullmatch(p.name)[1] for p in scenes] == [f"{s:05d}" for s in range(10)]
    assert {p.name for p in tiny_root.iterdir() if p.is_file()} == {MARKER_NAME}
    assert all(any(p.glob("*.jpg")) for p in scenes)  # every scene holds at least one image
    data = load_luperson(tiny_root)
    assert len(data.train) == 40 and not data.query and not data.gallery
    assert all(r.pid == UNLABELLED and r.camid == 0 for r in data.train)
    assert sum(len(list(p.glob("*.jpg"))) for p in scenes) == 40
    with Image.open(data.train[0].path) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (CROP_WIDTH, CROP_HEIGHT)


def test_load_synthetic_luperson_names_the_dataset_and_uses_the_parser(tiny_root):
    data = load_synthetic_luperson(tiny_root, **TINY)
    assert data.name == "synthetic_luperson"
    assert [r.path for r in data.train] == [r.path for r in load_luperson(tiny_root).train]


def test_plan_shows_a_few_images_per_person_per_scene_from_the_whole_pool():
    spec = LUPersonSpec()
    plan = plan_scenes(spec)
    assert len(plan) == 2000 and len({c.path for c in plan}) == 2000
    assert len({c.scene for c in plan}) == 400
    assert {c.person for c in plan} == set(range(600))  # every pool identity is used
    per_person_scene = Counter((c.scene, c.person) for c in plan)
    assert 2.0 < np.mean(list(per_person_scene.values())) < 4.0
    # People recur across scenes (each time in another scene's style), but not in most of them.
    scenes_per_person = Counter(person for _, person in per_person_scene)
    assert max(scenes_per_person.values()) <= 3


def test_every_scene_has_its_own_camera_style(tiny_root):
    styles = [lup_module._Renderer(LUPersonSpec(**TINY)).camera(s) for s in range(10)]
    gains = {tuple(np.round(s.gain, 6)) for s in styles}
    backgrounds = {s.background.tobytes() for s in styles}
    assert len(gains) == 10 and len(backgrounds) == 10


def test_same_arguments_give_identical_bytes_and_another_seed_differs(tmp_path, tiny_root):
    again = _tree_bytes(generate_luperson_tree(tmp_path / "again", **TINY))
    assert again == _tree_bytes(tiny_root)
    other = _tree_bytes(generate_luperson_tree(tmp_path / "other", **{**TINY, "seed": 1}))
    images = [k for k in again if k.endswith(".jpg")]
    assert all(other.get(k) != again[k] for k in images)


def test_a_complete_matching_tree_is_reused_and_new_parameters_regenerate(tmp_path, monkeypatch):
    root = generate_luperson_tree(tmp_path / "t", **TINY)
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker == {"generator": "reid.data.synthetic.luperson", "format_version": 1, **TINY}
    calls = []
    original = lup_module._write_tree
    monkeypatch.setattr(lup_module, "_write_tree", lambda *a: calls.append(a) or original(*a))
    image = next((root / "scene_00000").iterdir())
    mtime = image.stat().st_mtime_ns
    assert generate_luperson_tree(root, **TINY) == root
    load_synthetic_luperson(root, **TINY)
    assert calls == [] and image.stat().st_mtime_ns == mtime  # reused untouched
    load_synthetic_luperson(root, **{**TINY, "num_images": 30})
    assert len(calls) == 1 and len(load_luperson(root).train) == 30
    assert not list(tmp_path.glob(".t.partial-*"))  # staging folder renamed away


def test_an_interrupted_generation_leaves_no_tree(tmp_path, monkeypatch):
    def fail(*_):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(lup_module._Renderer, "__call__", fail)
    with pytest.raises(RuntimeError):
        generate_luperson_tree(tmp_path / "t", **TINY)
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_folder_is_never_overwritten(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="refusing"):
        generate_luperson_tree(tmp_path / "mine", **TINY)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_regenerating_refuses_to_delete_files_it_did_not_write(tmp_path):
    root = generate_luperson_tree(tmp_path / "t", **TINY)
    scene = sorted(p for p in root.iterdir() if p.is_dir())[0]
    (scene / "my_crop.jpg").write_bytes(b"not ours")
    with pytest.raises(
        FileExistsError, match=rf"{re.escape(str(root))} holds 1 file.*{scene.name}/my_crop\.jpg"
    ):
        generate_luperson_tree(root, **{**TINY, "seed": 1})
    assert (scene / "my_crop.jpg").read_bytes() == b"not ours"
    (scene / "my_crop.jpg").unlink()
    generate_luperson_tree(root, **{**TINY, "seed": 1})  # only its own files: replaced
    assert json.loads((root / MARKER_NAME).read_text())["seed"] == 1


def _fingerprint(person: Identity) -> bytes:
    return person.upper.tobytes() + person.lower.tobytes() + np.float64(person.height).tobytes()


def test_identities_are_disjoint_from_the_synthetic_market_people():
    """Checked two ways: the seed streams, and the sampled people themselves.

    Every random number here is seeded ``[seed, STREAM_LUPERSON, ...]``; the Market tree seeds
    ``[seed, stream, ...]`` with ``stream`` in layout's STREAM_* (0..4), so for any two seeds the
    seed words differ in the second place. Then the pool identities (seeds 0..2) are compared with
    every Market train/test identity and distractor of the demo-size tree (seeds 0..2).
    """
    market_streams = {STREAM_IDENTITY, STREAM_CAMERA, STREAM_PLAN, STREAM_IMAGE, STREAM_DISTRACTOR}
    assert market_streams == set(range(5)) and STREAM_LUPERSON not in market_streams
    assert identity_seed(7, 3)[:2] == [7, STREAM_LUPERSON]
    market_spec = SyntheticSpec(num_train_ids=120, num_test_ids=100)
    market = set()
    for seed in range(3):
        renderer = tree_module._Renderer(SyntheticSpec(**{**market_spec.as_dict(), "seed": seed}))
        market |= {_fingerprint(renderer.identity(pid)) for pid in range(1, 221)}
        market |= {
            _fingerprint(sample_identity(np.random.default_rng([seed, STREAM_DISTRACTOR, i])))
            for i in range(1500)
        }
    for seed in range(3):
        pool = {_fingerprint(lup_module._Renderer(LUPersonSpec(seed=seed)).identity(p)) for p in range(600)}
        assert len(pool) == 600 and not pool & market


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num_images", 0),
        ("num_images", 5),  # fewer images than scenes
        ("num_scenes", 0),
        ("num_identities", 0),
        ("num_identities", 2.5),
        ("num_scenes", True),
        ("seed", -1),
    ],
)
def test_bad_parameters_raise_naming_the_key(tmp_path, key, value):
    with pytest.raises(ValueError, match=key):
        generate_luperson_tree(tmp_path / "t", **{**TINY, key: value})
    with pytest.raises(ValueError, match=key):
        load_synthetic_luperson(tmp_path / "t", **{**TINY, key: value})
    assert not (tmp_path / "t").exists()


def test_cli_writes_a_luperson_tree_and_reuses_it(tmp_path, capsys):
    args = [
        "--luperson",
        "--root",
        str(tmp_path / "cli"),
        "--images",
        "12",
        "--scenes",
        "4",
        "--identities",
        "5",
    ]
    cli_main(args)
    assert "wrote" in capsys.readouterr().out
    assert len(load_luperson(tmp_path / "cli").train) == 12
    cli_main(args)
    assert "already holds" in capsys.readouterr().out
    image = next((tmp_path / "cli" / "scene_00000").iterdir())
    good = image.read_bytes()
    image.write_bytes(b"damaged")
    cli_main([*args, "--force"])
    assert "wrote" in capsys.readouterr().out and image.read_bytes() == good
