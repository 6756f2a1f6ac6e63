"""Which images a synthetic Market-1501 tree holds and what they are called.

The plan follows the real dataset's protocol:

* ``bounding_box_train``: training identities ``1..num_train_ids``, each seen by 2 or more
  cameras.
* ``query``: for each test identity (``num_train_ids+1 ..``), one image per camera it appears
  in, for at most ``max_queries_per_id`` cameras.
* ``bounding_box_test``: the test identities' remaining images, at least one in *every* camera
  the identity appears in (so each query has a true match in another camera), plus distractors
  (pid ``0000``: people who are nobody's match) and junk (pid ``-1``: background and body
  fragments, which parsers drop).

File names are Market's ``{pid:04d}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg`` (``-1_c...`` for
junk); cameras are 1-based in names. Frames count up per camera, so names are unique.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

TRAIN_FOLDER, QUERY_FOLDER, GALLERY_FOLDER = "bounding_box_train", "query", "bounding_box_test"
DISTRACTOR_PID, JUNK_PID = 0, -1
MAX_CAMERAS = 6
"""Market-1501 names cameras c1..c6; parsers check that range."""
MAX_PID = 1501
"""Market-1501 identities run 0001..1501; parsers check that range."""

# Streams keep the random numbers of different purposes independent of each other.
STREAM_IDENTITY, STREAM_CAMERA, STREAM_PLAN, STREAM_IMAGE, STREAM_DISTRACTOR = range(5)


def require_integers(dataset: str, checks: Sequence[tuple[str, object, int]]) -> None:
    """Raise a ValueError naming the first ``(key, value, low)`` whose value is not an integer >= low."""
    for key, value, low in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{dataset}: {key}={value!r}; expected an integer >= {low}")


@dataclass(frozen=True)
class SyntheticSpec:
    """The generation parameters; a tree on disk is reused only if its marker holds the same."""

    num_train_ids: int
    num_test_ids: int
    num_cameras: int = 6
    images_per_id: int = 12
    num_distractors: int = 100
    num_junk: int = 30
    max_queries_per_id: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("num_train_ids", self.num_train_ids, 1),
            ("num_test_ids", self.num_test_ids, 1),
            ("num_cameras", self.num_cameras, 2),
            ("images_per_id", self.images_per_id, 4),
            ("num_distractors", self.num_distractors, 0),
            ("num_junk", self.num_junk, 0),
            ("max_queries_per_id", self.max_queries_per_id, 1),
        )
        require_integers("synthetic dataset", checks)
        if self.num_cameras > MAX_CAMERAS:
            raise ValueError(
                f"synthetic dataset: num_cameras={self.num_cameras}; expected at most {MAX_CAMERAS} "
                "(Market-1501 file names and parser allow cameras c1..c6)"
            )
        total = self.num_train_ids + self.num_test_ids
        if total > MAX_PID:
            raise ValueError(
                f"synthetic dataset: num_train_ids + num_test_ids = {total}; "
                f"expected at most {MAX_PID} (Market-1501 identities are 0001..{MAX_PID})"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"synthetic dataset: seed={self.seed!r}; expected a non-negative integer")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class PlannedImage:
    """One image to render: where it goes, who it shows and through which camera."""

    folder: str
    file_name: str
    pid: int  # Market pid: >0 a person, 0 a distractor, -1 junk
    camera: int  # 0-based
    index: int  # running number within the tree; seeds the image's jitter


class _Namer:
    """Market-style names with a per-camera frame counter (unique by construction)."""

    def __init__(self) -> None:
        self._frames: dict[int, int] = {}

    def __call__(self, pid: int, camera: int, box: int) -> str:
        count = self._frames.get(camera, 0)
        self._frames[camera] = count + 1
        seq = 1 + (count // 400) % 6
        frame = 1 + 25 * count
        pid_text = "-1" if pid == JUNK_PID else f"{pid:04d}"
        return f"{pid_text}_c{camera + 1}s{seq}_{frame:06d}_{box:02d}.jpg"


def identity_cameras(spec: SyntheticSpec, pid: int, is_test: bool) -> np.ndarray:
    """The cameras (0-based, random order) that see identity ``pid``: at least two."""
    rng = np.random.default_rng([spec.seed, STREAM_PLAN, pid])
    # A test identity needs one gallery image per camera on top of its queries.
    most = min(spec.num_cameras, spec.images_per_id // 2 if is_test else spec.images_per_id)
    count = int(rng.integers(2, most + 1))
    return rng.choice(spec.num_cameras, size=count, replace=False)


def spread_cameras(cameras: np.ndarray, total: int, rng: np.random.Generator) -> list[int]:
    """``total`` camera draws covering every camera in ``cameras`` at least once, sorted."""
    extra = rng.choice(cameras, size=total - len(cameras))
    return sorted(int(c) for c in np.concatenate([cameras, extra]))


def plan_tree(spec: SyntheticSpec) -> list[PlannedImage]:
    """Every image of the tree, in a deterministic order."""
    name = _Namer()
    plan: list[PlannedImage] = []

    def add(folder: str, pid: int, camera: int, box: int) -> None:
        plan.append(PlannedImage(folder, name(pid, camera, box), pid, camera, len(plan)))

    for pid in range(1, spec.num_train_ids + 1):
        rng = np.random.default_rng([spec.seed, STREAM_PLAN, pid, 1])
        for box, camera in enumerate(
            spread_cameras(identity_cameras(spec, pid, False), spec.images_per_id, rng)
        ):
            add(TRAIN_FOLDER, pid, camera, 1 + box % 8)
    test_pids = range(spec.num_train_ids + 1, spec.num_train_ids + spec.num_test_ids + 1)
    for pid in test_pids:
        rng = np.random.default_rng([spec.seed, STREAM_PLAN, pid, 1])
        cameras = identity_cameras(spec, pid, True)
        query_cameras = cameras[: spec.max_queries_per_id]
        for camera in sorted(int(c) for c in query_cameras):
            add(QUERY_FOLDER, pid, camera, 1)
        gallery = spread_cameras(cameras, spec.images_per_id - len(query_cameras), rng)
        for box, camera in enumerate(gallery):
            add(GALLERY_FOLDER, pid, camera, 2 + box % 7)
    rng = np.random.default_rng([spec.seed, STREAM_PLAN, 0])
    for camera in rng.integers(0, spec.num_cameras, size=spec.num_distractors):
        add(GALLERY_FOLDER, DISTRACTOR_PID, int(camera), 1)
    for camera in rng.integers(0, spec.num_cameras, size=spec.num_junk):
        add(GALLERY_FOLDER, JUNK_PID, int(camera), 1)
    return plan
