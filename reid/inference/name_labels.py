"""Identity and camera from an image's file name, by the release formats of the dataset parsers.

Market-1501 (``0002_c1s1_000451_03.jpg``), DukeMTMC-reID (``0001_c2_f0046182.jpg``) and VeRi-776
(``0001_c001_00016450_0.jpg``) use the :class:`~reid.data.datasets.market_layout.NameFormat` of their
parser modules, range checks included; MSMT17 (``0000_000_01_0303morning_0015_0.jpg``: identity, then the
camera in the third ``_`` field, as ``reid.data.datasets.msmt17`` reads it) has its format here. The
camera is 0-based, as in every :class:`~reid.data.records.Record`. A name of no format, or with an id
out of its format's range, has no label.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from reid.data.datasets import dukemtmc, market1501, msmt17, veri776
from reid.data.datasets.errors import DatasetFormatError
from reid.data.datasets.market_layout import NameFormat, parse_name

MSMT17_NAME_FORMAT = NameFormat(
    pattern=re.compile(r"(?P<pid>\d+)_\d+_(?P<camid>\d+)_[0-9a-z]+_\d+_\d+\.jpg"),
    example="0000_000_01_0303morning_0015_0.jpg",
    pid_range=(0, msmt17.MAX_PID),
    cam_range=(1, msmt17.NUM_CAMERAS),
)

NAME_FORMATS: dict[str, NameFormat] = {
    market1501.NAME: market1501.NAME_FORMAT,
    dukemtmc.NAME: dukemtmc.NAME_FORMAT,
    veri776.NAME: veri776.NAME_FORMAT,
    msmt17.NAME: MSMT17_NAME_FORMAT,
}
"""The formats tried, in order; no name fits two (``c1s1``, ``_c2_f``, ``_c001_``, no ``c``)."""


@dataclass(frozen=True)
class NameLabel:
    """What a file name says: the identity as released (Market junk -1, distractor 0), the 0-based camera,
    and the dataset whose format matched."""

    pid: int
    camid: int
    dataset: str


def label_from_name(path: str) -> NameLabel | None:
    """The label of ``path``'s file name under the first format it matches, else ``None``."""
    name = os.path.basename(path)
    for dataset, fmt in NAME_FORMATS.items():
        if fmt.pattern.fullmatch(name) is None:
            continue
        try:
            record = parse_name(path, fmt, dataset)
        except DatasetFormatError:  # the format's shape with an id out of its range: not that dataset
            continue
        return NameLabel(record.pid, record.camid, dataset)
    return None
