"""Synthetic unlabelled people in a LUPerson-like tree: many scenes, each with its own look.

The synthetic Market-1501 tree (``tree.py``) has a few cameras, each with one strong style and
one background shared by all its images. That suits supervised ReID but not self-supervised
pretraining: with six cameras, DINO/PASS can solve their objective by clustering images by
camera instead of by person. LUPerson, the real pretraining source, comes from ~46K scenes
(videos; ~90 images each): its cameras vary far more than a six-camera dataset's. This tree keeps
that variety at a small scale: ``root/scene_00042/00042_0003.jpg``, one folder per scene, every
scene with its own freshly sampled :class:`CameraStyle` (background, colour cast, exposure, blur,
noise), and a few images per person per scene (5 images per scene by default).

People come from a pool of ``num_identities`` identities seeded from their own stream
(:data:`STREAM_LUPERSON`, outside the Market tree's streams in ``layout.py``), so the pretraining
source never contains the synthetic Market dataset's train or test people, whatever the seeds.
File names carry the scene, not the person: the tree is unlabelled, like LUPerson.

The tree is written atomically (staging folder renamed into place, the marker
:data:`~reid.data.synthetic.tree.MARKER_NAME` written last, holding the parameters) and is read
back by the real LUPerson parser (:func:`reid.data.datasets.luperson.load_luperson`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reid.data.records import ReIDDataset
from reid.data.synthetic.appearance import CameraStyle, Identity, View, sample_camera, sample_identity
from reid.data.synthetic.render import (
    CROP_HEIGHT,
    CROP_WIDTH,
    apply_camera,
    background_crop,
    draw_person,
    encode_jpeg,
    sample_pose,
)
from reid.data.synthetic.tree import MARKER_NAME, holds_finished_tree, publish_tree, register_generator

GENERATOR = "reid.data.synthetic.luperson"
FORMAT_VERSION = 1
"""Bump when rendering or planning changes, so trees written by older code are regenerated."""

STREAM_LUPERSON = 1000
"""Second word of every seed used here. The Market tree seeds ``[seed, stream, ...]`` with its
streams ``0..4`` (``layout.py``), so no random stream (and no identity) is shared with it."""
SUBSTREAM_IDENTITY, SUBSTREAM_SCENE, SUBSTREAM_PLAN, SUBSTREAM_IMAGE = range(4)
IMAGES_PER_PERSON = 3
"""Mean number of images of one person in one scene."""


@dataclass(frozen=True)
class LUPersonSpec:
    """The generation parameters; a tree on disk is reused only if its marker holds the same."""

    num_images: int = 2000
    num_scenes: int = 400
    num_identities: int = 600
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (("num_scenes", self.num_scenes, 1), ("num_identities", self.num_identities, 1))
        for key, value, low in checks:
            if not _is_int(value) or value < low:
                raise ValueError(f"synthetic LUPerson dataset: {key}={value!r}; expected an integer >= {low}")
        if not _is_int(self.num_images) or self.num_images < self.num_scenes:
            raise ValueError(
                f"synthetic LUPerson dataset: num_images={self.num_images!r}; expected an integer >= "
                f"num_scenes={self.num_scenes} (every scene holds at least one image)"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(
                f"synthetic LUPerson dataset: seed={self.seed!r}; expected a non-negative integer"
            )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def identity_seed(seed: int, person: int) -> list[int]:
    """The seed words of pool identity ``person`` (0-based), disjoint from the Market tree's."""
    return [seed, STREAM_LUPERSON, SUBSTREAM_IDENTITY, person]


def scene_seed(seed: int, scene: int) -> list[int]:
    """The seed words of scene ``scene``'s camera style (0-based)."""
    return [seed, STREAM_LUPERSON, SUBSTREAM_SCENE, scene]


@dataclass(frozen=True)
class PlannedCrop:
    """One image to render: its scene, its path relative to the root, the person it shows."""

    scene: int  # 0-based
    path: str  # "scene_00042/00042_0003.jpg"
    person: int  # 0-based index into the identity pool
    index: int  # running number within the tree; seeds the image's jitter


def plan_scenes(spec: LUPersonSpec) -> list[PlannedCrop]:
    """Every image of the tree, in a deterministic order (scene by scene, person by person).

    Scene sizes vary (at least one image each); a scene shows about one person per
    :data:`IMAGES_PER_PERSON` images. People are dealt from successive shuffles of the pool, so
    every identity is used before any is reused (once there are enough slots).
    """
    rng = np.random.default_rng([spec.seed, STREAM_LUPERSON, SUBSTREAM_PLAN])
    sizes = 1 + rng.multinomial(
        spec.num_images - spec.num_scenes, np.full(spec.num_scenes, 1 / spec.num_scenes)
    )
    width = max(5, len(str(spec.num_scenes - 1)))
    deck: list[int] = []
    plan: list[PlannedCrop] = []
    for scene, size in enumerate(int(s) for s in sizes):
        people: list[int] = []
        for _ in range(min(spec.num_identities, math.ceil(size / IMAGES_PER_PERSON))):
            if not deck:
                deck = [int(p) for p in rng.permutation(spec.num_identities)]
            people.append(deck.pop())
        counts = 1 + rng.multinomial(size - len(people), np.full(len(people), 1 / len(people)))
        frame = 0
        for person, count in zip(people, counts, strict=True):
            for _ in range(int(count)):
                path = f"scene_{scene:0{width}d}/{scene:0{width}d}_{frame:04d}.jpg"
                plan.append(PlannedCrop(scene, path, person, len(plan)))
                frame += 1
    return plan


class _Renderer:
    """Renders planned crops; caches pool identities and the current scene's camera style."""

    def __init__(self, spec: LUPersonSpec) -> None:
        self.spec = spec
        self._identities: dict[int, Identity] = {}
        self._scene: tuple[int, CameraStyle] | None = None

    def identity(self, person: int) -> Identity:
        if person not in self._identities:
            self._identities[person] = sample_identity(
                np.random.default_rng(identity_seed(self.spec.seed, person))
            )
        return self._identities[person]

    def camera(self, scene: int) -> CameraStyle:
        if self._scene is None or self._scene[0] != scene:  # the plan is ordered by scene
            style = sample_camera(
                np.random.default_rng(scene_seed(self.spec.seed, scene)), CROP_HEIGHT, CROP_WIDTH
            )
            self._scene = (scene, style)
        return self._scene[1]

    def __call__(self, item: PlannedCrop) -> bytes:
        camera = self.camera(item.scene)
        person = self.identity(item.person)
        rng = np.random.default_rng([self.spec.seed, STREAM_LUPERSON, SUBSTREAM_IMAGE, item.index])
        image = background_crop(camera, rng)
        draw_person(image, person, sample_pose(rng, person, View(int(rng.choice(4, p=camera.view_probs)))))
        return encode_jpeg(apply_camera(image, camera, rng), camera.jpeg_quality)


def _marker_content(spec: LUPersonSpec) -> dict:
    return {"generator": GENERATOR, "format_version": FORMAT_VERSION, **spec.as_dict()}


def _generated_files(params: Mapping[str, Any]) -> set[str]:
    fields = {f.name for f in dataclasses.fields(LUPersonSpec)}
    return {
        crop.path for crop in plan_scenes(LUPersonSpec(**{k: v for k, v in params.items() if k in fields}))
    }


register_generator(GENERATOR, _generated_files)


def is_complete_luperson_tree(root: Path, spec: LUPersonSpec) -> bool:
    """True if ``root`` holds a finished synthetic LUPerson tree generated with exactly ``spec``."""
    return holds_finished_tree(root, _marker_content(spec))


def _write_tree(folder: Path, spec: LUPersonSpec) -> None:
    """Render every planned crop into ``folder`` and write the marker last."""
    render = _Renderer(spec)
    for item in plan_scenes(spec):
        path = folder / item.path
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(render(item))
    (folder / MARKER_NAME).write_text(json.dumps(_marker_content(spec), indent=2) + "\n", encoding="utf-8")


def generate_luperson_tree(
    root: str | Path,
    num_images: int = 2000,
    num_scenes: int = 400,
    num_identities: int = 600,
    seed: int = 0,
) -> Path:
    """Render a synthetic LUPerson tree at ``root`` (replacing an older synthetic tree there).

    ``root`` receives one folder per scene (``scene_00000`` ...) of 128x64 JPEG crops, and the
    marker. A complete tree with the same parameters already at ``root`` is kept as it is; a
    non-empty folder without the marker is never overwritten (:class:`FileExistsError`). Same
    arguments give byte-identical files. Returns ``root`` as a :class:`Path`.
    """
    spec = LUPersonSpec(num_images, num_scenes, num_identities, seed)
    root = Path(root).expanduser()
    if is_complete_luperson_tree(root, spec):
        return root
    return publish_tree(
        root,
        write=lambda staging: _write_tree(staging, spec),
        is_complete=lambda path: is_complete_luperson_tree(path, spec),
    )


def load_synthetic_luperson(
    root: str | Path,
    num_images: int = 2000,
    num_scenes: int = 400,
    num_identities: int = 600,
    seed: int = 0,
) -> ReIDDataset:
    """The synthetic LUPerson images at ``root``, generated first unless a matching tree is there.

    Parsed by the real LUPerson parser, so SSL pretraining runs the same code path as on
    LUPerson: every record is unlabelled (``pid == -1``, camid 0) in ``train``.
    """
    from reid.data.datasets.luperson import load_luperson  # parser of the real layout

    spec = LUPersonSpec(num_images, num_scenes, num_identities, seed)
    root = Path(root).expanduser()
    if not is_complete_luperson_tree(root, spec):
        generate_luperson_tree(root, **spec.as_dict())
    return dataclasses.replace(load_luperson(root), name="synthetic_luperson")
