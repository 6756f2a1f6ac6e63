"""A second synthetic domain: people on a winter campus, written as a DukeMTMC-reID tree.

The synthetic Market-1501 tree (``tree.py``, domain A) shows street scenes through six cameras. This
tree (domain B) is what a cross-domain experiment (train on A, test on B) needs: other cameras
(:data:`~reid.data.synthetic.appearance.DUKE_CAMERAS`: cool colour casts, bright low-contrast
exposure, snow, paving and hedge backgrounds), eight of them, other people, and the DukeMTMC-reID
release's layout and names, read back by the real DukeMTMC parser::

    root/synthetic_tree.json                       (marker: the generation parameters)
    root/DukeMTMC-reID/bounding_box_train/0001_c2_f0000042.jpg ...
    root/DukeMTMC-reID/query/
    root/DukeMTMC-reID/bounding_box_test/

Names are Duke's ``{pid:04d}_c{cam}_f{frame:07d}.jpg`` (cameras 1-based, frames counting up per
camera, so names are unique). The protocol follows the Market tree's (queries in at most
``max_queries_per_id`` cameras, a gallery image in every camera an identity appears in), except that
Duke has no junk class: its distractors are ordinary identities seen only in the gallery (408 in the
release), here ``num_distractors`` identities with one gallery image each.

People never coincide with domain A's (nor with the LUPerson-like tree's): every seed used here is
``[seed, STREAM_DUKE, ...]`` with :data:`STREAM_DUKE` = 2000, while the Market tree seeds
``[seed, 0..4, ...]`` (``layout.py``) and the LUPerson tree ``[seed, 1000, ...]``; the second word
differs for any ``seed``, so no random stream, and no identity, is shared between the domains.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reid.data.records import ReIDDataset
from reid.data.synthetic.appearance import (
    DUKE_CAMERAS,
    CameraStyle,
    Identity,
    View,
    sample_camera,
    sample_identity,
)
from reid.data.synthetic.layout import (
    GALLERY_FOLDER,
    QUERY_FOLDER,
    TRAIN_FOLDER,
    PlannedImage,
    require_integers,
    spread_cameras,
)
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

GENERATOR = "reid.data.synthetic.duke"
FORMAT_VERSION = 1
"""Bump when rendering or planning changes, so trees written by older code are regenerated."""
DUKE_FOLDER = "DukeMTMC-reID"
"""The release's folder name, which the DukeMTMC parser finds under the root."""
MAX_CAMERAS = 8
"""DukeMTMC-reID names cameras c1..c8; the parser checks that range."""
MAX_PID = 9999
"""Four-digit identities; the parser checks 0..9999."""

STREAM_DUKE = 2000
"""Second word of every seed used here (the Market tree uses 0..4, the LUPerson tree 1000)."""
SUBSTREAM_IDENTITY, SUBSTREAM_CAMERA, SUBSTREAM_PLAN, SUBSTREAM_IMAGE = range(4)


@dataclass(frozen=True)
class DukeSpec:
    """The generation parameters; a tree on disk is reused only if its marker holds the same."""

    num_train_ids: int
    num_test_ids: int
    num_cameras: int = 8
    images_per_id: int = 12
    num_distractors: int = 100
    max_queries_per_id: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("num_train_ids", self.num_train_ids, 1),
            ("num_test_ids", self.num_test_ids, 1),
            ("num_cameras", self.num_cameras, 2),
            ("images_per_id", self.images_per_id, 4),
            ("num_distractors", self.num_distractors, 0),
            ("max_queries_per_id", self.max_queries_per_id, 1),
            ("seed", self.seed, 0),
        )
        require_integers("synthetic Duke dataset", checks)
        if self.num_cameras > MAX_CAMERAS:
            raise ValueError(
                f"synthetic Duke dataset: num_cameras={self.num_cameras}; expected at most {MAX_CAMERAS} "
                "(DukeMTMC-reID file names and parser allow cameras c1..c8)"
            )
        total = self.num_train_ids + self.num_test_ids + self.num_distractors
        if total > MAX_PID:
            raise ValueError(
                f"synthetic Duke dataset: num_train_ids + num_test_ids + num_distractors = {total}; expected "
                f"at most {MAX_PID} (DukeMTMC-reID identities have four digits)"
            )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def identity_seed(seed: int, pid: int) -> list[int]:
    """The seed words of identity ``pid``, disjoint from every other synthetic domain's."""
    return [seed, STREAM_DUKE, SUBSTREAM_IDENTITY, pid]


def _identity_cameras(spec: DukeSpec, pid: int, is_test: bool) -> np.ndarray:
    """The cameras (0-based, random order) that see identity ``pid``: at least two."""
    rng = np.random.default_rng([spec.seed, STREAM_DUKE, SUBSTREAM_PLAN, pid])
    most = min(spec.num_cameras, spec.images_per_id // 2 if is_test else spec.images_per_id)
    return rng.choice(spec.num_cameras, size=int(rng.integers(2, most + 1)), replace=False)


def plan_duke_tree(spec: DukeSpec) -> list[PlannedImage]:
    """Every image of the tree, in a deterministic order: train, test identities, distractors."""
    frames: dict[int, int] = {}
    plan: list[PlannedImage] = []

    def add(folder: str, pid: int, camera: int) -> None:
        count = frames.get(camera, 0)
        frames[camera] = count + 1
        name = f"{pid:04d}_c{camera + 1}_f{1 + 37 * count:07d}.jpg"
        plan.append(PlannedImage(folder, name, pid, camera, len(plan)))

    for pid in range(1, spec.num_train_ids + 1):
        rng = np.random.default_rng([spec.seed, STREAM_DUKE, SUBSTREAM_PLAN, pid, 1])
        for camera in spread_cameras(_identity_cameras(spec, pid, False), spec.images_per_id, rng):
            add(TRAIN_FOLDER, pid, camera)
    first_distractor = spec.num_train_ids + spec.num_test_ids + 1
    for pid in range(spec.num_train_ids + 1, first_distractor):
        rng = np.random.default_rng([spec.seed, STREAM_DUKE, SUBSTREAM_PLAN, pid, 1])
        cameras = _identity_cameras(spec, pid, True)
        query_cameras = cameras[: spec.max_queries_per_id]
        for camera in sorted(int(c) for c in query_cameras):
            add(QUERY_FOLDER, pid, camera)
        for camera in spread_cameras(cameras, spec.images_per_id - len(query_cameras), rng):
            add(GALLERY_FOLDER, pid, camera)
    rng = np.random.default_rng([spec.seed, STREAM_DUKE, SUBSTREAM_PLAN, 0])
    for offset, camera in enumerate(rng.integers(0, spec.num_cameras, size=spec.num_distractors)):
        add(GALLERY_FOLDER, first_distractor + offset, int(camera))
    return plan


class _Renderer:
    """Renders planned images; caches identities and cameras, which every image of them shares."""

    def __init__(self, spec: DukeSpec) -> None:
        self.spec = spec
        self._cameras = [
            sample_camera(
                np.random.default_rng([spec.seed, STREAM_DUKE, SUBSTREAM_CAMERA, c]),
                CROP_HEIGHT,
                CROP_WIDTH,
                DUKE_CAMERAS,
            )
            for c in range(spec.num_cameras)
        ]
        self._identities: dict[int, Identity] = {}

    def identity(self, pid: int) -> Identity:
        if pid not in self._identities:
            self._identities[pid] = sample_identity(np.random.default_rng(identity_seed(self.spec.seed, pid)))
        return self._identities[pid]

    def __call__(self, item: PlannedImage) -> bytes:
        camera: CameraStyle = self._cameras[item.camera]
        rng = np.random.default_rng([self.spec.seed, STREAM_DUKE, SUBSTREAM_IMAGE, item.index])
        image = background_crop(camera, rng)
        person = self.identity(item.pid)
        draw_person(image, person, sample_pose(rng, person, View(int(rng.choice(4, p=camera.view_probs)))))
        return encode_jpeg(apply_camera(image, camera, rng), camera.jpeg_quality)


def _marker_content(spec: DukeSpec) -> dict:
    return {"generator": GENERATOR, "format_version": FORMAT_VERSION, **spec.as_dict()}


def _generated_files(params: Mapping[str, Any]) -> set[str]:
    fields = {f.name for f in dataclasses.fields(DukeSpec)}
    spec = DukeSpec(**{k: v for k, v in params.items() if k in fields})
    return {f"{DUKE_FOLDER}/{item.folder}/{item.file_name}" for item in plan_duke_tree(spec)}


register_generator(GENERATOR, _generated_files)


def is_complete_duke_tree(root: Path, spec: DukeSpec) -> bool:
    """True if ``root`` holds a finished synthetic Duke tree generated with exactly ``spec``."""
    splits = (TRAIN_FOLDER, QUERY_FOLDER, GALLERY_FOLDER)
    return holds_finished_tree(root, _marker_content(spec), [f"{DUKE_FOLDER}/{split}" for split in splits])


def _write_tree(folder: Path, spec: DukeSpec) -> None:
    """Render every planned image into ``folder/DukeMTMC-reID`` and write the marker last."""
    for name in (TRAIN_FOLDER, QUERY_FOLDER, GALLERY_FOLDER):
        (folder / DUKE_FOLDER / name).mkdir(parents=True)
    render = _Renderer(spec)
    for item in plan_duke_tree(spec):
        (folder / DUKE_FOLDER / item.folder / item.file_name).write_bytes(render(item))
    (folder / MARKER_NAME).write_text(json.dumps(_marker_content(spec), indent=2) + "\n", encoding="utf-8")


def generate_duke_tree(
    root: str | Path,
    num_train_ids: int,
    num_test_ids: int,
    num_cameras: int = 8,
    images_per_id: int = 12,
    num_distractors: int = 100,
    max_queries_per_id: int = 3,
    seed: int = 0,
) -> Path:
    """Render a synthetic DukeMTMC-reID tree at ``root`` (replacing an older synthetic tree there).

    A complete tree with the same parameters already at ``root`` is kept as it is; a non-empty folder
    without the marker is never overwritten (:class:`FileExistsError`). Same arguments give
    byte-identical files. Returns ``root`` as a :class:`Path`.
    """
    spec = DukeSpec(
        num_train_ids, num_test_ids, num_cameras, images_per_id, num_distractors, max_queries_per_id, seed
    )
    root = Path(root).expanduser()
    if is_complete_duke_tree(root, spec):
        return root
    return publish_tree(
        root,
        write=lambda staging: _write_tree(staging, spec),
        is_complete=lambda path: is_complete_duke_tree(path, spec),
    )


def load_synthetic_duke(
    root: str | Path,
    num_train_ids: int = 120,
    num_test_ids: int = 100,
    num_cameras: int = 8,
    images_per_id: int = 12,
    num_distractors: int = 100,
    max_queries_per_id: int = 3,
    seed: int = 0,
) -> ReIDDataset:
    """The synthetic Duke dataset at ``root``, generated first unless a complete matching tree is there.

    Parsed by the real DukeMTMC-reID parser (from ``root/DukeMTMC-reID``), so a cross-domain run on
    synthetic data exercises the same code as on the release.
    """
    from reid.data.datasets.dukemtmc import load_dukemtmc  # parser of the real layout

    spec = DukeSpec(
        num_train_ids, num_test_ids, num_cameras, images_per_id, num_distractors, max_queries_per_id, seed
    )
    root = Path(root).expanduser()
    if not is_complete_duke_tree(root, spec):
        generate_duke_tree(root, **spec.as_dict())
    return dataclasses.replace(load_dukemtmc(root), name="synthetic_duke")
