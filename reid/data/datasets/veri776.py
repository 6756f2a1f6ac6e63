"""VeRi-776 (Liu et al., "Large-scale vehicle re-identification in urban surveillance videos",
ICME 2016; "A Deep Learning-Based Approach to Progressive Vehicle Re-identification", ECCV 2016).

Source: https://vehiclereid.github.io/VeRi/ (release ``VeRi``).

Layout::

    VeRi/
        image_train/   0001_c001_00016450_0.jpg ...
        image_query/
        image_test/    (the gallery)

File name ``VVVV_cCCC_FFFFFFFF_N.jpg``: vehicle id ``VVVV`` (1..776), camera ``CCC`` in 1..20
(stored 0-based), frame, index.

Viewpoints are not in the release. TransReID reads them from the keypoint/orientation files of
the VehicleKeyPointData project (``keypoint_train.txt``, ``keypoint_test.txt``): one line per
image, ``<path> <keypoint numbers ...> <view id>``, matched by file base name, last field the view
(0..7). Pass those files as ``view_files``; images without a view label are dropped as TransReID
does (``missing_view="drop"``) or raise (``missing_view="error"``). Without view files every
``viewid`` is 0.

Statistics:

    ===========  =======  =====
    split         images   ids
    ===========  =======  =====
    train         37,778    576
    query          1,678    200
    gallery       11,579    200
    ===========  =======  =====

20 cameras.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

from reid.data.datasets.errors import (
    DatasetFormatError,
    DatasetLayoutError,
    read_lines,
    require_file,
    resolve_root,
)
from reid.data.datasets.market_layout import NameFormat, parse_split
from reid.data.datasets.registry import register_dataset
from reid.data.records import Record, ReIDDataset, relabel

NAME = "VeRi-776"
OFFICIAL_NAMES = ("VeRi", "VeRi-776", "veri776", "VeRi_with_plate")
SPLIT_FOLDERS = ("image_train", "image_query", "image_test")
NAME_FORMAT = NameFormat(
    pattern=re.compile(r"(?P<pid>\d+)_c(?P<camid>\d+)_\d+_\d+\.jpg"),
    example="0001_c001_00016450_0.jpg",
    pid_range=(0, 776),
    cam_range=(1, 20),
)
MISSING_VIEW_POLICIES = ("drop", "error")


def read_view_labels(view_files: Sequence[str | Path]) -> dict[str, int]:
    """Map image base name -> view id from keypoint files (last field of each line)."""
    views: dict[str, int] = {}
    for view_file in view_files:
        path = require_file(Path(view_file), NAME, "view label")
        for n, line in read_lines(path):
            fields = line.split()
            if len(fields) < 2 or not fields[-1].isdigit():
                raise DatasetFormatError(
                    f"{NAME} view label line {path}:{n} is {line!r}; expected '<image path> ... <view id>'"
                )
            views[os.path.basename(fields[0])] = int(fields[-1])
    return views


def attach_views(records: list[Record], views: dict[str, int], missing_view: str, split: str) -> list[Record]:
    """Set ``viewid`` from ``views``; apply ``missing_view`` to records without a label."""
    labelled = []
    for record in records:
        name = os.path.basename(record.path)
        if name in views:
            labelled.append(dataclasses.replace(record, viewid=views[name]))
        elif missing_view == "error":
            raise DatasetFormatError(f"{NAME} image {record.path} has no view label in the view files")
    if not labelled:
        raise DatasetLayoutError(f"{NAME} {split} split has no image with a view label in the view files")
    return labelled


@register_dataset("veri776", folder="VeRi", name_format=NAME_FORMAT, datamodule={"image_size": [256, 256]})
def load_veri776(
    root: str | Path, view_files: Sequence[str | Path] | None = None, missing_view: str = "drop"
) -> ReIDDataset:
    """Parse VeRi-776 from its folder or the parent holding ``VeRi``; optional view labels."""
    if missing_view not in MISSING_VIEW_POLICIES:
        raise ValueError(f"{NAME} missing_view={missing_view!r}; expected one of {MISSING_VIEW_POLICIES}")
    folder = resolve_root(root, NAME, OFFICIAL_NAMES, SPLIT_FOLDERS)
    splits = {name: parse_split(folder / name, NAME_FORMAT, NAME, train=False) for name in SPLIT_FOLDERS}
    if view_files:
        views = read_view_labels(view_files)
        splits = {name: attach_views(recs, views, missing_view, name) for name, recs in splits.items()}
    return ReIDDataset(
        name=NAME,
        train=relabel(splits["image_train"]),
        query=splits["image_query"],
        gallery=splits["image_test"],
    )
