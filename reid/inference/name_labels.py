"""Identity and camera from an image's file name, by the release formats of the registered datasets.

Every dataset registered with a ``name_format`` (:mod:`reid.data.datasets.registry`) is tried: Market-1501
(``0002_c1s1_000451_03.jpg``), DukeMTMC-reID (``0001_c2_f0046182.jpg``), VeRi-776
(``0001_c001_00016450_0.jpg``), MSMT17 (``0000_000_01_0303morning_0015_0.jpg``) and any dataset a user
registers, range checks included. The camera is 0-based, as in every :class:`~reid.data.records.Record`. A
name of no format, or with an id out of its format's range, has no label.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reid.data.datasets.errors import DatasetFormatError
from reid.data.datasets.market_layout import NameFormat, parse_name
from reid.data.datasets.registry import registered_datasets


def name_formats() -> dict[str, NameFormat]:
    """The file-name format of every registered dataset that has one, by the dataset's config name, in
    registration order; the built-in ones fit disjoint names (``c1s1``, ``_c2_f``, ``_c001_``, no ``c``)."""
    return {
        name: entry.name_format
        for name, entry in registered_datasets().items()
        if entry.name_format is not None
    }


@dataclass(frozen=True)
class NameLabel:
    """What a file name says: the identity as released (Market junk -1, distractor 0), the 0-based camera,
    and the registered dataset whose format matched."""

    pid: int
    camid: int
    dataset: str


def labels_from_names(paths: Sequence[str]) -> list[NameLabel | None]:
    """:func:`label_from_name` of every path; the registered formats are looked up once, not per image."""
    formats = name_formats()
    return [label_from_name(path, formats) for path in paths]


def label_from_name(path: str, formats: Mapping[str, NameFormat] | None = None) -> NameLabel | None:
    """The label of ``path``'s file name under the first of ``formats`` (default: :func:`name_formats`) it
    matches, else ``None``."""
    name = os.path.basename(path)
    for dataset, fmt in (name_formats() if formats is None else formats).items():
        if fmt.pattern.fullmatch(name) is None:
            continue
        try:
            record = parse_name(path, fmt, dataset)
        except DatasetFormatError:  # the format's shape with an id out of its range: not that dataset
            continue
        return NameLabel(record.pid, record.camid, dataset)
    return None
