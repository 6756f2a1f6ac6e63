"""A user's own re-identification data: ``<root>/{train,query,gallery}`` folders of images.

Layout::

    my_data/
        train/     images, any depth
        query/
        gallery/
        labels.csv (optional)

Labels come from exactly one of:

* ``name_pattern``: a regular expression searched in each file *name* with named groups ``pid``
  and ``camid`` (and optionally ``viewid``), e.g. ``(?P<pid>\\d+)_c(?P<camid>\\d+)`` for
  Market-style names;
* ``labels_csv``: a CSV file ``path,pid,camid[,viewid]`` (header optional), ``path`` relative to
  the root with the split folder first, e.g. ``query/cam3/0007.jpg,7,3``. Every image of the split
  folders must have a row and every row must name an existing image. Set ``name_pattern: null`` with it.

The config default (``data/dataset=folder``, root ``${paths.data_dir}/my_reid_data``) is
:data:`DEFAULT_NAME_PATTERN`.

``pid`` is an integer; ``-1`` marks junk (dropped everywhere, as in Market-1501). Camera and view
labels may be any strings or numbers: they are mapped to ``0..C-1`` in sorted order (numeric when
all are integers) over all splits, so 1-based cameras become 0-based. Train identities are
relabelled. Nothing is decoded.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from reid.data.datasets.errors import (
    DatasetFormatError,
    DatasetLayoutError,
    list_images,
    require_file,
    resolve_root,
)
from reid.data.datasets.registry import register_dataset
from reid.data.records import Record, ReIDDataset, relabel

DEFAULT_NAME_PATTERN = r"(?P<pid>-?\d+)_c(?P<camid>\d+)"
"""Market-style names, ``0002_c1_anything.jpg``: the ``folder`` config's ``name_pattern``."""

SPLITS = ("train", "query", "gallery")
CSV_COLUMNS = ("path", "pid", "camid", "viewid")
JUNK_PID = -1


@dataclass(frozen=True)
class RawLabel:
    """Labels of one image before cameras and views are mapped to 0-based ids."""

    path: str
    split: str
    pid: int
    camid: str
    viewid: str


def parse_pid(value: str, source: str) -> int:
    """An integer identity >= -1, else an error naming ``source``."""
    try:
        pid = int(value)
    except ValueError:
        raise DatasetFormatError(f"folder dataset pid {value!r} in {source} is not an integer") from None
    if pid < JUNK_PID:
        raise DatasetFormatError(
            f"folder dataset pid {pid} in {source} is negative; only -1 (junk) is allowed"
        )
    return pid


def compile_pattern(name_pattern: str) -> re.Pattern[str]:
    """Compile ``name_pattern`` and check it has the groups ``pid`` and ``camid``."""
    try:
        pattern = re.compile(name_pattern)
    except re.error as error:
        raise ValueError(
            f"folder dataset name_pattern {name_pattern!r} is not a valid regex: {error}"
        ) from None
    missing = {"pid", "camid"} - set(pattern.groupindex)
    if missing:
        raise ValueError(
            f"folder dataset name_pattern {name_pattern!r} lacks the named group(s) {sorted(missing)}; "
            r"expected e.g. '(?P<pid>\d+)_c(?P<camid>\d+)'"
        )
    return pattern


def labels_from_names(folder: Path, name_pattern: str) -> list[RawLabel]:
    """Labels of every split image from its file name."""
    pattern = compile_pattern(name_pattern)
    labels = []
    for split in SPLITS:
        for path in list_images(folder / split, "folder dataset", recursive=True):
            match = pattern.search(os.path.basename(path))
            if match is None:
                raise DatasetFormatError(
                    f"folder dataset file name {path} does not match name_pattern {name_pattern!r}"
                )
            view = match.groupdict().get("viewid") or "0"
            labels.append(RawLabel(path, split, parse_pid(match["pid"], path), match["camid"], view))
    return labels


def read_csv_rows(csv_path: Path) -> dict[str, tuple[int, list[str]]]:
    """Map relative path -> (line number, row) of a labels CSV, header skipped."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = [(n, [cell.strip() for cell in row]) for n, row in enumerate(csv.reader(handle), 1) if row]
    if rows and [c.lower() for c in rows[0][1]] in (list(CSV_COLUMNS[:3]), list(CSV_COLUMNS)):
        rows = rows[1:]
    by_path: dict[str, tuple[int, list[str]]] = {}
    for n, row in rows:
        if len(row) not in (3, 4):
            raise DatasetFormatError(
                f"folder dataset labels line {csv_path}:{n} has {len(row)} fields {row}; "
                "expected 'path,pid,camid[,viewid]'"
            )
        key = Path(row[0]).as_posix()
        if key in by_path:
            raise DatasetFormatError(f"folder dataset labels line {csv_path}:{n} repeats path {row[0]!r}")
        by_path[key] = (n, row)
    if not by_path:
        raise DatasetLayoutError(f"folder dataset labels file {csv_path} has no rows")
    return by_path


def labels_from_csv(folder: Path, csv_path: Path) -> list[RawLabel]:
    """Labels of every split image from the CSV; images and rows must correspond one to one."""
    rows = read_csv_rows(require_file(csv_path, "folder dataset", "labels"))
    labels = []
    for split in SPLITS:
        for path in list_images(folder / split, "folder dataset", recursive=True):
            key = Path(path).relative_to(folder).as_posix()
            if key not in rows:
                raise DatasetFormatError(f"folder dataset image {path} has no row '{key},...' in {csv_path}")
            n, row = rows.pop(key)
            source = f"{csv_path}:{n}"
            view = row[3] if len(row) == 4 else "0"
            labels.append(RawLabel(path, split, parse_pid(row[1], source), row[2], view))
    if rows:
        key, (n, _) = next(iter(rows.items()))
        raise DatasetFormatError(
            f"folder dataset labels line {csv_path}:{n} names {key!r}, which is not an image under "
            f"{folder}/{{{','.join(SPLITS)}}} ({len(rows)} such rows)"
        )
    return labels


def dense_ids(values: set[str]) -> dict[str, int]:
    """Map label strings to ``0..N-1``: numeric order when all are integers, else string order."""
    numeric = all(re.fullmatch(r"-?\d+", v) for v in values)
    ordered = sorted(values, key=int if numeric else str)
    return {value: index for index, value in enumerate(ordered)}


@register_dataset("folder", folder="my_reid_data", config={"name_pattern": DEFAULT_NAME_PATTERN})
def load_folder(
    root: str | Path, name_pattern: str | None = None, labels_csv: str | Path | None = None
) -> ReIDDataset:
    """Parse a ``{train,query,gallery}`` folder labelled by ``name_pattern`` or ``labels_csv``."""
    if (name_pattern is None) == (labels_csv is None):
        raise ValueError(
            "folder dataset needs exactly one of name_pattern and labels_csv; got "
            f"name_pattern={name_pattern!r}, labels_csv={labels_csv!r}"
        )
    folder = resolve_root(root, "folder dataset", (), SPLITS)
    if name_pattern is not None:
        labels = labels_from_names(folder, name_pattern)
    else:
        labels = labels_from_csv(folder, Path(cast("str | Path", labels_csv)))  # not None: checked above
    cams = dense_ids({label.camid for label in labels})
    views = dense_ids({label.viewid for label in labels})
    splits: dict[str, list[Record]] = {split: [] for split in SPLITS}
    for label in labels:
        if label.pid != JUNK_PID:
            record = Record(label.path, label.pid, cams[label.camid], views[label.viewid])
            splits[label.split].append(record)
    for split, records in splits.items():
        if not records:
            raise DatasetLayoutError(f"folder dataset split {folder / split} holds only junk (pid -1) images")
    return ReIDDataset(
        name=folder.name, train=relabel(splits["train"]), query=splits["query"], gallery=splits["gallery"]
    )
