"""Write a synthetic Market-1501 tree to disk and load it through the Market-1501 parser.

A tree is complete when its marker file (:data:`MARKER_NAME`) holds the generation parameters.
Generation writes into a hidden temporary sibling folder and renames it into place at the end,
so an interrupted run never leaves a half-written tree that looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from reid.data.records import ReIDDataset
from reid.data.synthetic.appearance import CameraStyle, Identity, View, sample_camera, sample_identity
from reid.data.synthetic.layout import (
    DISTRACTOR_PID,
    GALLERY_FOLDER,
    JUNK_PID,
    QUERY_FOLDER,
    STREAM_CAMERA,
    STREAM_DISTRACTOR,
    STREAM_IDENTITY,
    STREAM_IMAGE,
    TRAIN_FOLDER,
    PlannedImage,
    SyntheticSpec,
    plan_tree,
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

MARKER_NAME = "synthetic_tree.json"
FORMAT_VERSION = 1
"""Bump when rendering changes, so trees written by older code are regenerated."""


def _marker_content(spec: SyntheticSpec) -> dict:
    return {"generator": "reid.data.synthetic", "format_version": FORMAT_VERSION, **spec.as_dict()}


def holds_finished_tree(
    root: str | Path, marker_content: Mapping[str, Any], folders: Sequence[str] = ()
) -> bool:
    """True if ``root`` holds a finished generated tree: its marker (written last) reads ``marker_content``
    and each of ``folders`` is there. Every synthetic generator decides reuse by this."""
    marker = Path(root) / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        content = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return content == marker_content and all((Path(root) / folder).is_dir() for folder in folders)


def is_complete_tree(root: Path, spec: SyntheticSpec) -> bool:
    """True if ``root`` holds a finished tree generated with exactly ``spec``."""
    return holds_finished_tree(root, _marker_content(spec), (TRAIN_FOLDER, QUERY_FOLDER, GALLERY_FOLDER))


class _Renderer:
    """Renders planned images; caches identities and cameras, which every image of them shares."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        self._cameras = [
            sample_camera(np.random.default_rng([spec.seed, STREAM_CAMERA, c]), CROP_HEIGHT, CROP_WIDTH)
            for c in range(spec.num_cameras)
        ]
        self._identities: dict[int, Identity] = {}

    def identity(self, pid: int) -> Identity:
        if pid not in self._identities:
            self._identities[pid] = sample_identity(
                np.random.default_rng([self.spec.seed, STREAM_IDENTITY, pid])
            )
        return self._identities[pid]

    def __call__(self, item: PlannedImage) -> bytes:
        camera: CameraStyle = self._cameras[item.camera]
        rng = np.random.default_rng([self.spec.seed, STREAM_IMAGE, item.index])
        image = background_crop(camera, rng)
        if item.pid == JUNK_PID:
            self._draw_fragment(image, rng, camera)
        else:
            if item.pid == DISTRACTOR_PID:  # a passer-by nobody looks for, in a poor detection box
                person = sample_identity(
                    np.random.default_rng([self.spec.seed, STREAM_DISTRACTOR, item.index])
                )
            else:
                person = self.identity(item.pid)
            view = View(int(rng.choice(4, p=camera.view_probs)))
            pose = sample_pose(rng, person, view)
            if item.pid == DISTRACTOR_PID and rng.random() < 0.5:
                zoom = rng.uniform(1.2, 1.7)
                pose = dataclasses.replace(pose, height=pose.height * zoom, top=pose.top - rng.uniform(0, 40))
            draw_person(image, person, pose)
        return encode_jpeg(apply_camera(image, camera, rng), camera.jpeg_quality)

    def _draw_fragment(self, image: np.ndarray, rng: np.random.Generator, camera: CameraStyle) -> None:
        """Junk: background, sometimes with a person mostly outside the box (a bad detection)."""
        if rng.random() < 0.5:
            return
        person = sample_identity(rng)
        pose = sample_pose(rng, person, View(int(rng.choice(4, p=camera.view_probs))))
        shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.55, 0.8) * CROP_WIDTH
        draw_person(image, person, dataclasses.replace(pose, center_x=pose.center_x + shift))


def _write_tree(folder: Path, spec: SyntheticSpec) -> None:
    """Render every planned image into ``folder`` and write the marker last."""
    for name in (TRAIN_FOLDER, QUERY_FOLDER, GALLERY_FOLDER):
        (folder / name).mkdir()
    render = _Renderer(spec)
    for item in plan_tree(spec):
        (folder / item.folder / item.file_name).write_bytes(render(item))
    (folder / MARKER_NAME).write_text(json.dumps(_marker_content(spec), indent=2) + "\n", encoding="utf-8")


GeneratedFiles = Callable[[Mapping[str, Any]], set[str]]
"""Marker content -> the files (relative POSIX paths) the generator that wrote it writes."""
_GENERATORS: dict[str, GeneratedFiles] = {}


def register_generator(name: str, generated_files: GeneratedFiles) -> None:
    """Let :func:`remove_synthetic_tree` recognise the files of trees whose marker names ``name``."""
    _GENERATORS[name] = generated_files


def _market_files(params: Mapping[str, Any]) -> set[str]:
    fields = {f.name for f in dataclasses.fields(SyntheticSpec)}
    spec = SyntheticSpec(**{k: v for k, v in params.items() if k in fields})
    return {f"{item.folder}/{item.file_name}" for item in plan_tree(spec)}


register_generator(_marker_content(SyntheticSpec(1, 1))["generator"], _market_files)


def foreign_files(root: Path) -> list[str]:
    """Files under ``root`` that the generator named by its marker did not write (all, without a marker
    a registered generator can read back), sorted."""
    present = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())
    try:
        content = json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))
        expected = _GENERATORS[content["generator"]](content)
    except (OSError, ValueError, KeyError, TypeError):
        return [p for p in present if p != MARKER_NAME]
    return [p for p in present if p != MARKER_NAME and p not in expected]


def remove_synthetic_tree(root: Path) -> None:
    """Remove a synthetic tree (or an empty folder) at ``root``; refuse to delete anything else, even
    a file someone added to a generated tree (notes, images)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise FileExistsError(f"synthetic dataset root {root} exists and is not a folder")
    if not any(root.iterdir()):
        root.rmdir()
        return
    if not (root / MARKER_NAME).is_file():
        raise FileExistsError(
            f"synthetic dataset root {root} is a non-empty folder without a '{MARKER_NAME}' marker; "
            "refusing to overwrite it: pass an empty or new folder"
        )
    foreign = foreign_files(root)
    if foreign:
        raise FileExistsError(
            f"synthetic dataset root {root} holds {len(foreign)} file(s) the generator did not write "
            f"(e.g. {foreign[0]}); refusing to delete them to write a new tree: move them out, or pass a "
            "new folder as the root"
        )
    shutil.rmtree(root)


def generate_market_tree(
    root: str | Path,
    num_train_ids: int,
    num_test_ids: int,
    num_cameras: int = 6,
    images_per_id: int = 12,
    num_distractors: int = 100,
    num_junk: int = 30,
    max_queries_per_id: int = 3,
    seed: int = 0,
) -> Path:
    """Render a synthetic Market-1501 tree at ``root`` (replacing an older synthetic tree there).

    A complete tree with the same parameters already at ``root`` is kept as it is. ``root``
    receives ``bounding_box_train``, ``query``, ``bounding_box_test`` and the marker.
    Same arguments give byte-identical files. Returns ``root`` as a :class:`Path`.
    """
    spec = SyntheticSpec(
        num_train_ids, num_test_ids, num_cameras, images_per_id, num_distractors, num_junk,
        max_queries_per_id, seed,
    )  # fmt: skip
    return publish_tree(
        Path(root).expanduser(),
        write=lambda staging: _write_tree(staging, spec),
        is_complete=lambda path: is_complete_tree(path, spec),
    )


_GENERATION_ALLOWED: ContextVar[bool] = ContextVar("synthetic_generation_allowed", default=True)


@contextmanager
def existing_trees_only() -> Iterator[None]:
    """Inside the block a synthetic loader reads a tree that is there and never writes one: the tools
    that rebuild a run's data (``reid.tools.visualize ranked``) must not render a new dataset where the
    run's is missing (a run started from another folder), they must say where they looked."""
    token = _GENERATION_ALLOWED.set(False)
    try:
        yield
    finally:
        _GENERATION_ALLOWED.reset(token)


def publish_tree(root: Path, write: Callable[[Path], None], is_complete: Callable[[Path], bool]) -> Path:
    """Atomically put a generated tree at ``root``: ``write`` fills a staging folder beside it,
    which then replaces an older synthetic tree there by one rename, so readers (other DDP ranks,
    an interrupted run) never see a half-written tree. Returns ``root``. Refused inside
    :func:`existing_trees_only`."""
    if not _GENERATION_ALLOWED.get():
        raise FileNotFoundError(
            f"{root}: no complete synthetic dataset of the run's settings there, and this tool reads data, "
            "it does not generate it; point it at the folder the run trained on (--data-dir)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        write(staging)
        # Another process (a DDP rank) may have finished the same tree meanwhile: its bytes equal
        # ours, so keep it rather than deleting files it may be reading.
        if is_complete(root):
            return root
        remove_synthetic_tree(root)
        try:
            os.rename(staging, root)
        except OSError:
            if not is_complete(root):  # a concurrent process did not finish the same tree
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return root


def load_synthetic(
    root: str | Path,
    num_train_ids: int = 120,
    num_test_ids: int = 100,
    num_cameras: int = 6,
    images_per_id: int = 12,
    num_distractors: int = 100,
    num_junk: int = 30,
    max_queries_per_id: int = 3,
    seed: int = 0,
) -> ReIDDataset:
    """The synthetic dataset at ``root``, generated first unless a complete matching tree is there.

    The tree is parsed by the Market-1501 parser, so it exercises the same code as the real data.
    """
    from reid.data.datasets.market1501 import load_market1501  # parser of the real layout

    spec = SyntheticSpec(
        num_train_ids, num_test_ids, num_cameras, images_per_id, num_distractors, num_junk,
        max_queries_per_id, seed,
    )  # fmt: skip
    root = Path(root).expanduser()
    if not is_complete_tree(root, spec):
        generate_market_tree(root, **spec.as_dict())
    return dataclasses.replace(load_market1501(root), name="synthetic")
