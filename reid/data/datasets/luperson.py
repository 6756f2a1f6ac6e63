"""LUPerson (Fu et al., "Unsupervised Pre-training for Person Re-identification", CVPR 2021):
unlabelled person crops for self-supervised pretraining (DINO, PASS, TransReID-SSL).

Source: https://github.com/DengpanFu/LUPerson (release folder ``LUPerson`` of image crops).

Layout: any folder tree of images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``), searched recursively;
nothing is decoded; ``root`` is the folder or its parent holding ``LUPerson`` or ``LUP`` (TransReID-SSL's
name: ``LUP/images/*.jpg`` with ``LUP/CFS_list.pkl`` beside it). An optional keep-list restricts the set
(``reid.data.datasets.keep_lists``: a text file, e.g. written by the CFS tool, or the official pickled
``CFS_list.pkl``), of which ``keep_num`` keeps the first N entries (the official ``--keep_num``). Entries
are paths relative to the dataset folder, or, as ``main_dino.py`` joins them, to its ``images`` folder
when that is where the first entry is. With a keep-list the tree is not walked: the paths are validated
(relative, inside the folder, an image suffix, no duplicates), every distinct parent folder must exist
and the first entry's file too, but files are not stat-ed one by one (2.5M of them would take minutes on
a network disk).

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
    require_file,
)
from reid.data.datasets.keep_lists import read_keep_list_file
from reid.data.datasets.registry import register_dataset
from reid.data.record_table import RecordTable
from reid.data.records import ReIDDataset

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


def entries_base(folder: Path, first: str) -> Path:
    """Where the entries of a keep-list are relative to: ``folder``, or ``folder/images`` (the official
    ``LUP/images`` that ``main_dino.py`` joins its pickled names to) when the first entry is a file there
    and not in ``folder``."""
    images = folder / "images"
    if not (folder / first).is_file() and (images / first).is_file():
        return images
    return folder


def read_keep_list(keep_list: Path, folder: Path, keep_num: int | None = None) -> RecordTable:
    """The images of a keep-list file (text or official pickle) in file order, the first ``keep_num``
    when given, validated (module docstring), as a table rooted at the entries' base folder."""
    found = read_keep_list_file(keep_list, keep_num)
    entries = found.entries
    if not entries:
        raise DatasetLayoutError(f"{NAME} keep-list {keep_list} is empty; expected one image path per line")
    base = entries_base(folder, entries[0])
    parents: dict[str, int] = {}
    for index, line in enumerate(entries):
        parent, _, name = line.rpartition("/")
        if line.startswith(("/", "../")) or "/../" in line or not name.lower().endswith(IMAGE_SUFFIXES):
            raise DatasetFormatError(
                f"{NAME} keep-list entry {found.where(index)} is {line!r}; expected an image path "
                f"relative to {base} (no '..', suffix one of {IMAGE_SUFFIXES})"
            )
        parents.setdefault(parent, index)
    if len(set(entries)) != len(entries):
        first: dict[str, int] = {}
        for index, line in enumerate(entries):
            if line in first:
                raise DatasetFormatError(
                    f"{NAME} keep-list entry {found.where(index)} repeats {line!r} (first at "
                    f"{found.where(first[line])})"
                )
            first[line] = index
    for parent, index in parents.items():
        if not os.path.isdir(os.path.join(base, parent)):
            raise DatasetLayoutError(
                f"{NAME} keep-list entry {found.where(index)} points into {base / parent}, which does not "
                "exist"
            )
    if not (base / entries[0]).is_file():
        raise DatasetLayoutError(
            f"{NAME} keep-list entry {found.where(0)}: {base / entries[0]} is not a file (nor is it under "
            f"{folder / 'images'}); the entries must be paths relative to the dataset folder"
        )
    return RecordTable.from_paths(entries, root=os.path.join(str(base), ""))


@register_dataset("luperson", folder="LUPerson", datamodule=None)  # unlabelled: data=luperson_ssl
def load_luperson(
    root: str | Path, keep_list: str | Path | None = None, keep_num: int | None = None
) -> ReIDDataset:
    """Unlabelled LUPerson images (all of the tree, or the first ``keep_num`` of ``keep_list``) as
    ``train``."""
    folder = resolve_folder(root)
    if keep_list is None:
        if keep_num is not None:
            raise DatasetFormatError(
                f"data.dataset.keep_num={keep_num} needs a keep-list (data.dataset.keep_list=...): it keeps "
                "the list's first N entries"
            )
        train = RecordTable.from_paths(list_images(folder, NAME, recursive=True))
    else:
        train = read_keep_list(require_file(Path(keep_list), NAME, "keep-list"), folder, keep_num)
    return ReIDDataset(name=NAME, train=train, query=[], gallery=[])
