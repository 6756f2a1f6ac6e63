"""MSMT17 (Wei et al., "Person Transfer GAN to Bridge Domain Gap for Person Re-Identification",
CVPR 2018).

Source: http://www.pkuvmc.com/publications/msmt17.html. Two releases, same list files:

    MSMT17_V1/                          MSMT17_V2/  (faces blurred)
        train/0000/0000_000_01_0303morning_0015_0.jpg   mask_train_v2/...
        test/...                                         mask_test_v2/...
        list_train.txt  list_val.txt  list_query.txt  list_gallery.txt

(TransReID names the V1 folder plain ``MSMT17``; that name is accepted too.) The published MSMT17
results of TransReID-SSL and PASS (and TransReID's) are on V1; users who trained on V2 report 1.7 and
3.9 mAP less in those trackers, so a V2 tree loads with a warning saying so. Each list line is
``<pid folder>/<file name> <pid>``, e.g. ``0000/0000_000_01_0303morning_0015_0.jpg 0``; train and
val paths are under the train folder, query and gallery under the test folder. The camera is the
third ``_`` field of the file name (1..15, stored 0-based). Train and test identities are numbered
separately from 0; train = ``list_train`` + ``list_val`` (the TransReID / fast-reid convention),
relabelled.

Statistics:

    ===========  =======  =====
    split         images   ids
    ===========  =======  =====
    train         32,621  1,041  (train + val)
    query         11,659  3,060
    gallery       82,161  3,060
    ===========  =======  =====

15 cameras. Only the list files are read; no image is opened or stat-ed.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from reid.data.datasets.errors import (
    DatasetFormatError,
    DatasetLayoutError,
    describe_contents,
    read_lines,
    resolve_root,
)
from reid.data.datasets.market_layout import NameFormat
from reid.data.datasets.registry import register_dataset
from reid.data.records import Record, ReIDDataset, relabel

NAME = "MSMT17"
OFFICIAL_NAMES = ("MSMT17_V1", "MSMT17_V2", "MSMT17")
LIST_FILES = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
IMAGE_FOLDERS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}
NUM_CAMERAS = 15
MAX_PID = 4100
FILE_NAME_FORMAT = NameFormat(
    pattern=re.compile(r"(?P<pid>\d+)_\d+_(?P<camid>\d+)_[0-9a-z]+_\d+_\d+\.jpg"),
    example="0000_000_01_0303morning_0015_0.jpg",
    pid_range=(0, MAX_PID),
    cam_range=(1, NUM_CAMERAS),
)
"""A released image's name, ``<pid>_<index>_<camera>_<date+time>_<frame>_<n>.jpg``, for the tools that label
images by name (the parser reads labels from the list files, which this format agrees with)."""
V2_WARNING = (
    "MSMT17 at %s is the V2 release (mask_train_v2, mask_test_v2: faces blurred); the published MSMT17 "
    "numbers of the experiments (published: in conf/experiment, summarize --report) are V1's, and "
    "TransReID-SSL / PASS users training on V2 report 1.7 and 3.9 mAP less"
)
log = logging.getLogger("reid")


def image_folders(folder: Path) -> tuple[Path, Path]:
    """The (train, test) image folders of a V1 or V2 release (V2 logs :data:`V2_WARNING`)."""
    for version, (train_name, test_name) in IMAGE_FOLDERS.items():
        if (folder / train_name).is_dir() and (folder / test_name).is_dir():
            if version == "V2":
                log.warning(V2_WARNING, folder)
            return folder / train_name, folder / test_name
    raise DatasetLayoutError(
        f"{NAME} root {folder} has neither 'train'+'test' (V1) nor 'mask_train_v2'+'mask_test_v2' (V2) "
        f"image folders (found: {describe_contents(folder)})"
    )


def parse_list_line(line: str, source: str, image_dir: str) -> Record:
    """One ``<pid folder>/<file> <pid>`` line; ``source`` is ``file:line`` for error messages."""
    fields = line.split()
    if len(fields) != 2 or not fields[1].isdigit():
        raise DatasetFormatError(
            f"{NAME} list line {source} is {line!r}; expected '<folder>/<file name> <pid>', "
            "e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0'"
        )
    relative, pid = fields[0], int(fields[1])
    name_fields = relative.rsplit("/", 1)[-1].split("_")
    if len(name_fields) < 4 or not name_fields[2].isdigit():
        raise DatasetFormatError(
            f"{NAME} file name {relative!r} at {source} has no camera number in its third '_' field; "
            "expected e.g. '0000_000_01_0303morning_0015_0.jpg'"
        )
    cam = int(name_fields[2])
    if not 1 <= cam <= NUM_CAMERAS:
        raise DatasetFormatError(f"{NAME} camera {cam} out of range [1, {NUM_CAMERAS}] at {source}")
    if pid > MAX_PID:
        raise DatasetFormatError(f"{NAME} identity {pid} out of range [0, {MAX_PID}] at {source}")
    return Record(os.path.join(image_dir, relative), pid, cam - 1)


def parse_list(list_path: Path, image_dir: Path) -> list[Record]:
    """All records of one list file; an empty list is an error."""
    lines = read_lines(list_path)
    if not lines:
        raise DatasetLayoutError(f"{NAME} list file {list_path} is empty; expected one image per line")
    prefix = str(image_dir)
    return [parse_list_line(text, f"{list_path}:{n}", prefix) for n, text in lines]


@register_dataset("msmt17", folder="MSMT17_V1", name_format=FILE_NAME_FORMAT)
def load_msmt17(root: str | Path) -> ReIDDataset:
    """Parse MSMT17 (V1 or V2) from its folder or the parent holding ``MSMT17_V1``/``MSMT17_V2``."""
    folder = resolve_root(root, NAME, OFFICIAL_NAMES, LIST_FILES)
    train_dir, test_dir = image_folders(folder)
    train_list, val_list, query_list, gallery_list = (folder / name for name in LIST_FILES)
    train = parse_list(train_list, train_dir) + parse_list(val_list, train_dir)
    return ReIDDataset(
        name=NAME,
        train=relabel(train),
        query=parse_list(query_list, test_dir),
        gallery=parse_list(gallery_list, test_dir),
    )
