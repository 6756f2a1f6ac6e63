"""Write tiny dataset trees in each release's real naming format (for tests; reusable).

Every writer takes a destination ``root`` plus per-split lists of ``(pid, camera)`` pairs with the
camera 1-based as in the releases, writes one small valid JPEG per entry (decodable, 8x4 pixels)
and returns the dataset folder it created. File names are made unique by a running frame number.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image

Spec = Sequence[tuple[int, int]]

MARKET_SPEC: dict[str, Spec] = {
    "bounding_box_train": [(2, 1), (2, 2), (7, 3), (7, 3), (7, 5), (0, 1), (-1, 2)],
    "query": [(2, 1), (7, 3)],
    "bounding_box_test": [(2, 2), (2, 6), (7, 4), (0, 1), (0, 2), (-1, 3), (-1, 1)],
}
"""Market-1501 tree: train 5 usable images of ids {2, 7}; gallery 5 usable (2 distractors)."""

DUKE_SPEC: dict[str, Spec] = {
    "bounding_box_train": [(1, 1), (1, 8), (5, 2), (9, 3)],
    "query": [(1, 2), (5, 8)],
    "bounding_box_test": [(1, 1), (5, 3), (11, 7)],
}

MSMT_SPEC: dict[str, Spec] = {
    "train": [(0, 1), (0, 2), (3, 15)],
    "val": [(5, 4), (5, 6)],
    "query": [(0, 1), (1, 9)],
    "gallery": [(0, 3), (1, 14), (2, 2)],
}
"""MSMT17 lists: train ids {0, 3} + val id {5}; test ids {0, 1, 2} (numbered separately)."""

VERI_SPEC: dict[str, Spec] = {
    "image_train": [(1, 1), (1, 20), (4, 5), (4, 6), (9, 2)],
    "image_query": [(2, 3), (6, 11)],
    "image_test": [(2, 4), (2, 13), (6, 1)],
}


@lru_cache(maxsize=4)
def tiny_jpeg(width: int = 8, height: int = 4) -> bytes:
    """Bytes of a small valid JPEG (mid-grey)."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_images(folder: Path, relative_paths: Iterable[str]) -> list[Path]:
    """Write a tiny JPEG at each ``folder/relative_path``; return the paths."""
    written = []
    for relative in relative_paths:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_jpeg())
        written.append(path)
    return written


def market_name(pid: int, cam: int, frame: int) -> str:
    """``0002_c1s1_000451_03.jpg`` (junk pid -1 is written ``-1``)."""
    prefix = "-1" if pid == -1 else f"{pid:04d}"
    return f"{prefix}_c{cam}s1_{frame:06d}_01.jpg"


def duke_name(pid: int, cam: int, frame: int) -> str:
    """``0001_c2_f0046182.jpg``."""
    return f"{pid:04d}_c{cam}_f{frame:07d}.jpg"


def msmt_path(pid: int, cam: int, frame: int) -> str:
    """``0000/0000_000_01_0303morning_0015_0.jpg`` (pid folder / name)."""
    return f"{pid:04d}/{pid:04d}_{frame:03d}_{cam:02d}_0303morning_{frame:04d}_0.jpg"


def veri_name(pid: int, cam: int, frame: int) -> str:
    """``0001_c001_00016450_0.jpg``."""
    return f"{pid:04d}_c{cam:03d}_{frame:08d}_0.jpg"


def write_named_splits(folder: Path, spec: Mapping[str, Spec], name_of) -> Path:
    """Write ``folder/<split>/<name_of(pid, cam, frame)>`` for every split of ``spec``."""
    frame = 0
    for split, entries in spec.items():
        names = []
        for pid, cam in entries:
            frame += 1
            names.append(name_of(pid, cam, frame))
        (folder / split).mkdir(parents=True, exist_ok=True)
        write_images(folder / split, names)
    return folder


def write_market1501(root: Path, spec: Mapping[str, Spec] = MARKET_SPEC) -> Path:
    """``root/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}`` + a Thumbs.db."""
    folder = write_named_splits(root / "Market-1501-v15.09.15", spec, market_name)
    (folder / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
    return folder


def write_dukemtmc(
    root: Path, spec: Mapping[str, Spec] = DUKE_SPEC, folder_name: str = "DukeMTMC-reID"
) -> Path:
    """``root/<folder_name>/{bounding_box_train,query,bounding_box_test}`` in Duke naming."""
    return write_named_splits(root / folder_name, spec, duke_name)


def cuhk03_np_name(pid: int, cam: int, frame: int) -> str:
    """``0001_c1_1.png``."""
    return f"{pid:04d}_c{cam}_{frame}.png"


def write_cuhk03_np(root: Path, spec: Mapping[str, Spec], boxes: str = "detected") -> Path:
    """``root/cuhk03-np/<boxes>/{bounding_box_train,query,bounding_box_test}`` in CUHK03-NP naming."""
    return write_named_splits(root / "cuhk03-np" / boxes, spec, cuhk03_np_name)


def write_veri776(root: Path, spec: Mapping[str, Spec] = VERI_SPEC) -> Path:
    """``root/VeRi/{image_train,image_query,image_test}``."""
    return write_named_splits(root / "VeRi", spec, veri_name)


def write_veri_views(path: Path, views: Mapping[str, int], prefix: str = "image_train") -> Path:
    """A VehicleKeyPointData-style view file: ``<prefix>/<name> <20 keypoint numbers> <view>``."""
    keypoints = " ".join(["-1"] * 40)
    lines = [f"{prefix}/{name} {keypoints} {view}" for name, view in views.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_msmt17(root: Path, version: str = "V1", spec: Mapping[str, Spec] = MSMT_SPEC) -> Path:
    """``root/MSMT17_<version>/`` with image folders and ``list_{train,val,query,gallery}.txt``."""
    folder = root / f"MSMT17_{version}"
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    frame = 0
    for split, entries in spec.items():
        image_dir = folder / (train_dir if split in ("train", "val") else test_dir)
        lines = []
        for pid, cam in entries:
            frame += 1
            relative = msmt_path(pid, cam, frame)
            write_images(image_dir, [relative])
            lines.append(f"{relative} {pid}")
        (folder / f"list_{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_vehicleid(
    root: Path, train: Sequence[int], tests: Mapping[int, Sequence[int]], write_files: bool = True
) -> Path:
    """``root/VehicleID_V1.0/`` with one image per listed vehicle id and the split lists.

    ``train`` and each ``tests[size]`` are vehicle ids, one entry per image (repeat an id for
    more images); image names are 7-digit running numbers.
    """
    folder = root / "VehicleID_V1.0"
    split_dir = folder / "train_test_split"
    split_dir.mkdir(parents=True)
    (folder / "image").mkdir()
    counter = 0
    lists = {"train_list.txt": train, **{f"test_list_{size}.txt": ids for size, ids in tests.items()}}
    for list_name, ids in lists.items():
        lines = []
        for vid in ids:
            counter += 1
            lines.append(f"{counter:07d} {vid}")
            if write_files:
                write_images(folder / "image", [f"{counter:07d}.jpg"])
        (split_dir / list_name).write_text("\n".join(lines) + "\n")
    return folder


def write_luperson(root: Path, relative_paths: Iterable[str]) -> Path:
    """``root/LUPerson/<relative path>`` for each path (any depth)."""
    folder = root / "LUPerson"
    folder.mkdir(parents=True, exist_ok=True)
    write_images(folder, relative_paths)
    return folder


def write_folder_dataset(root: Path, splits: Mapping[str, Iterable[str]]) -> Path:
    """``root/my_data/<split>/<relative path>`` for a user's own ``{train,query,gallery}`` tree."""
    folder = root / "my_data"
    for split, paths in splits.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        write_images(folder / split, paths)
    return folder
