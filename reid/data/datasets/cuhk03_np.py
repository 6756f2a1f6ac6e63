"""CUHK03-NP: CUHK03 under the new protocol (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017; images from Li et al., "DeepReID", CVPR 2014).

Source: https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP (release ``cuhk03-np``).

Layout: the Market-1501 folders once per kind of bounding box, ``detected`` (by a person detector, the
harder and more often reported) and ``labeled`` (drawn by hand)::

    cuhk03-np/
        detected/
            bounding_box_train/   0001_c1_1.png ...
            query/
            bounding_box_test/
        labeled/
            ...

File name ``PPPP_cC_N.png``: identity ``PPPP`` in 1..1467, camera ``C`` in 1..2 (stored 0-based), image
``N``. Statistics: 767 train identities and 700 test identities;

    ========  =======  =====  =======
    boxes      train   query  gallery
    ========  =======  =====  =======
    detected    7,365  1,400    5,332
    labeled     7,368  1,400    5,328
    ========  =======  =====  =======
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from reid.data.datasets.market_layout import NameFormat, load_market_layout
from reid.data.datasets.registry import register_dataset
from reid.data.records import ReIDDataset

NAME = "CUHK03-NP"
RELEASE = "cuhk03-np"
BOXES = ("detected", "labeled")
NAME_FORMAT = NameFormat(
    pattern=re.compile(r"(?P<pid>\d+)_c(?P<camid>\d)_\d+\.png"),
    example="0001_c1_1.png",
    pid_range=(1, 1467),
    cam_range=(1, 2),
)


@register_dataset("cuhk03_np", folder=RELEASE, name_format=NAME_FORMAT)
def load_cuhk03_np(root: str | Path, boxes: str = "detected") -> ReIDDataset:
    """Parse CUHK03-NP's ``boxes`` (``detected`` or ``labeled``) from ``cuhk03-np``, its parent, or the
    ``<boxes>`` folder itself."""
    if boxes not in BOXES:
        raise ValueError(f"{NAME} boxes={boxes!r}; expected one of {BOXES}")
    data = load_market_layout(root, NAME, (boxes, f"{RELEASE}/{boxes}"), NAME_FORMAT)
    return dataclasses.replace(data, name=f"{NAME} ({boxes})")
