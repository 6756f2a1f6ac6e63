"""The Market-1501 folder layout, shared by Market-1501, DukeMTMC-reID and Occluded-Duke.

All three releases are ``<root>/{bounding_box_train,query,bounding_box_test}`` with one image per
file and the identity and camera in the file name; they differ only in the name format and the
id ranges, which each dataset module describes with a :class:`NameFormat`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reid.data.datasets.errors import DatasetFormatError, DatasetLayoutError, list_images, resolve_root
from reid.data.records import Record, ReIDDataset, relabel

SPLIT_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")


@dataclass(frozen=True)
class NameFormat:
    """How identity and camera are written in a file name, and their legal ranges.

    ``pattern`` must fully match the file name and have named groups ``pid`` and ``camid``
    (the camera 1-based, as released). ``junk_pid`` images are dropped from every split;
    ``distractor_pid`` images are dropped from train and kept in query/gallery as negatives.
    """

    pattern: re.Pattern[str]
    example: str
    pid_range: tuple[int, int]
    cam_range: tuple[int, int]
    junk_pid: int | None = None
    distractor_pid: int | None = None


def parse_name(path: str, fmt: NameFormat, dataset: str) -> Record:
    """Parse one image file name into a record with a 0-based camera id.

    Raises:
        DatasetFormatError: if the name does not match ``fmt`` or an id is out of range.
    """
    match = fmt.pattern.fullmatch(os.path.basename(path))
    if match is None:
        raise DatasetFormatError(
            f"{dataset} file name {path} does not match the expected format "
            f"(e.g. {fmt.example!r}, pattern {fmt.pattern.pattern!r})"
        )
    pid, cam = int(match["pid"]), int(match["camid"])
    low, high = fmt.pid_range
    if not low <= pid <= high:
        raise DatasetFormatError(f"{dataset} identity {pid} out of range [{low}, {high}] in file {path}")
    low, high = fmt.cam_range
    if not low <= cam <= high:
        raise DatasetFormatError(f"{dataset} camera {cam} out of range [{low}, {high}] in file {path}")
    return Record(path, pid, cam - 1)


def parse_split(folder: Path, fmt: NameFormat, dataset: str, train: bool) -> list[Record]:
    """All labelled records of one split folder, junk (and in train, distractors) dropped."""
    dropped = {fmt.junk_pid, fmt.distractor_pid if train else None} - {None}
    records = [parse_name(p, fmt, dataset) for p in list_images(folder, dataset)]
    kept = [r for r in records if r.pid not in dropped]
    if not kept:
        raise DatasetLayoutError(
            f"{dataset} split {folder} holds {len(records)} images but none with a usable identity "
            f"(all are junk{' or distractors' if train else ''})"
        )
    return kept


def load_market_layout(
    root: str | Path, dataset: str, official_names: Sequence[str], fmt: NameFormat
) -> ReIDDataset:
    """Parse a Market-style release; train identities relabelled to ``0..N-1``."""
    folder = resolve_root(root, dataset, official_names, SPLIT_FOLDERS)
    train_dir, query_dir, gallery_dir = (folder / name for name in SPLIT_FOLDERS)
    return ReIDDataset(
        name=dataset,
        train=relabel(parse_split(train_dir, fmt, dataset, train=True)),
        query=parse_split(query_dir, fmt, dataset, train=False),
        gallery=parse_split(gallery_dir, fmt, dataset, train=False),
    )
