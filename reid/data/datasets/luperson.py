"""LUPerson (Fu et al., "Unsupervised Pre-training for Person Re-identification", CVPR 2021):
unlabelled person crops for self-supervised pretraining (DINO, PASS, TransReID-SSL).

Source: https://github.com/DengpanFu/LUPerson (release folder ``LUPerson`` of image crops).

Layout: any folder tree of images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``), searched recursively;
nothing is decoded. An optional keep-list (e.g. written by the CFS tool, TransReID-SSL section 3.2)
restricts the set: one image path per line, relative to the dataset folder, ``#`` lines ignored,
order kept. With a keep-list the tree is not walked: the paths are validated (relative, inside the
folder, an image suffix, no duplicates) and every distinct parent folder must exist, but files
are not stat-ed one by one (2.5M of them would take minutes on a network disk).

Statistics: ~4.18M crops of ~200K identities from 46K scenes; TransReID-SSL keeps 2,508,146
images after CFS. No labels: every record has ``pid == UNLABELLED`` (-1) and camid/viewid 0.

Returned shape (chosen for one datamodule contract): a :class:`ReIDDataset` whose ``train`` holds
the images and whose ``query``/``gallery`` are empty.
"""

from __future__ import annotations

import os
from pathlib import Path

from reid.data.datasets.errors import (
    IMAGE_SUFFIXES,
    DatasetFormatError,
    DatasetLayoutError,
    list_images,
    read_lines,
    require_file,
)
from reid.data.records import UNLABELLED, Record, ReIDDataset

NAME = "LUPerson"
OFFICIAL_NAMES = ("LUPerson", "LUP")


def resolve_folder(root: str | Path) -> Path:
    """``root/LUPerson`` (or ``root/LUP``) if present, else ``root`` itself."""
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DatasetLayoutError(
            f"{NAME} root {root} does not exist or is not a folder; expected a folder tree of images "
            f"or its parent holding one of {list(OFFICIAL_NAMES)}"
        )
    return next((root / name for name in OFFICIAL_NAMES if (root / name).is_dir()), root)


def read_keep_list(keep_list: Path, folder: Path) -> list[str]:
    """Validated image paths (folder joined) from a keep-list file, in file order."""
    entries = [(n, line) for n, line in read_lines(keep_list) if not line.startswith("#")]
    if not entries:
        raise DatasetLayoutError(f"{NAME} keep-list {keep_list} is empty; expected one image path per line")
    seen: dict[str, int] = {}
    parents: dict[str, int] = {}
    prefix = str(folder)
    for n, line in entries:
        parts = line.split("/")
        if line.startswith("/") or ".." in parts or not line.lower().endswith(IMAGE_SUFFIXES):
            raise DatasetFormatError(
                f"{NAME} keep-list line {keep_list}:{n} is {line!r}; expected an image path relative to "
                f"{folder} (no '..', suffix one of {IMAGE_SUFFIXES})"
            )
        if line in seen:
            raise DatasetFormatError(
                f"{NAME} keep-list line {keep_list}:{n} repeats {line!r} (first at line {seen[line]})"
            )
        seen[line] = n
        parents.setdefault("/".join(parts[:-1]), n)
    for parent, n in parents.items():
        if not os.path.isdir(os.path.join(prefix, parent)):
            raise DatasetLayoutError(
                f"{NAME} keep-list line {keep_list}:{n} points into {folder / parent}, which does not exist"
            )
    return [os.path.join(prefix, line) for line, _ in seen.items()]


def load_luperson(root: str | Path, keep_list: str | Path | None = None) -> ReIDDataset:
    """Unlabelled LUPerson images (all of the tree, or those of ``keep_list``) as ``train``."""
    folder = resolve_folder(root)
    if keep_list is None:
        paths = list_images(folder, NAME, recursive=True)
    else:
        paths = read_keep_list(require_file(Path(keep_list), NAME, "keep-list"), folder)
    train = [Record(path, UNLABELLED, 0) for path in paths]
    return ReIDDataset(name=NAME, train=train, query=[], gallery=[])
