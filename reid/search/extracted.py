"""Read back what ``python -m reid.tools.extract`` wrote: features, their image index and metadata.

``feats.npy`` is memory-mapped (rows are read when they are ranked or indexed, so a gallery of millions
need not fit in memory); ``feats.safetensors`` (tensor ``features``) is read whole. The index
``feats.csv`` (``row,path,pid,camid,name_format``) must list one image per feature row, in order; ``pid``
and ``camid`` are empty for names of no known format. ``feats.json`` says how the features were made
(``metric``, ``normalized``, ``feature_dim``, ``checkpoint``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from reid.inference.name_labels import NameLabel
from reid.search.exact import Features

FEATURE_SUFFIXES = (".npy", ".safetensors")
"""The features file formats ``reid.tools.extract`` writes."""


def output_paths(features: str | Path) -> tuple[Path, Path, Path]:
    """``(features, index .csv, metadata .json)`` beside each other; the suffix picks the format."""
    features = Path(features)
    if features.suffix not in FEATURE_SUFFIXES:
        raise ValueError(f"output {features}: expected a {' or '.join(FEATURE_SUFFIXES)} file name")
    return features, features.with_suffix(".csv"), features.with_suffix(".json")


@dataclass
class ExtractedFeatures:
    """Rows ``features[i]`` of image ``paths[i]`` (label ``labels[i]`` from its name, or ``None``)."""

    features: Features
    paths: list[str]
    labels: list[NameLabel | None]
    metadata: dict[str, Any]

    @property
    def metric(self) -> str:
        return str(self.metadata["metric"])


def _read_matrix(path: Path) -> Features:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such features file (python -m reid.tools.extract writes one)")
    if path.suffix == ".npy":
        matrix = np.load(path, mmap_mode="r")
    else:
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
            if "features" not in names:
                raise ValueError(f"{path}: no tensor 'features' (found {names})")
            matrix = handle.get_tensor("features")
    if matrix.ndim != 2:
        raise ValueError(f"{path}: expected features [N, D], got shape {list(matrix.shape)}")
    return matrix


def _label(row: dict[str, str], index: Path) -> NameLabel | None:
    if not row.get("pid") or not row.get("camid"):
        return None
    try:
        return NameLabel(int(row["pid"]), int(row["camid"]), row.get("name_format", ""))
    except ValueError as error:
        raise ValueError(f"{index}: row {row.get('row')}: pid/camid must be integers ({error})") from error


def read_extracted(path: str | Path) -> ExtractedFeatures:
    """The features file ``path`` with its ``.csv`` index and ``.json`` metadata beside it."""
    features, index, metadata = output_paths(path)
    matrix = _read_matrix(features)
    for needed in (index, metadata):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed}: missing beside {features} (reid.tools.extract writes both)")
    meta = json.loads(metadata.read_text())
    if "metric" not in meta:
        raise ValueError(f"{metadata}: no 'metric' key; expected the metadata of reid.tools.extract")
    with index.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != len(matrix):
        raise ValueError(f"{index}: {len(rows)} images for the {len(matrix)} feature rows of {features}")
    return ExtractedFeatures(matrix, [r["path"] for r in rows], [_label(r, index) for r in rows], meta)
