"""Market-1501 (Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015).

Source: https://zheng-lab-anu.github.io/Project/project_reid.html (release ``Market-1501-v15.09.15``).

Layout::

    Market-1501-v15.09.15/
        bounding_box_train/   0002_c1s1_000451_03.jpg ...
        query/
        bounding_box_test/    (also holds Thumbs.db, ignored)

File name ``PPPP_cCsS_FFFFFF_BB.jpg``: identity ``PPPP`` (``-1`` = junk: dropped everywhere;
``0000`` = distractor: kept in the gallery as a negative, dropped from train), camera ``C`` in
1..6 (stored 0-based), sequence ``S``, frame ``FFFFFF``, detection box ``BB``.

Statistics (after dropping junk):

    ===========  =======  =====
    split         images   ids
    ===========  =======  =====
    train         12,936    751
    query          3,368    750
    gallery       15,913    751 + distractors
    ===========  =======  =====

6 cameras. Identities lie in -1..1501.
"""

from __future__ import annotations

import re
from pathlib import Path

from reid.data.datasets.market_layout import NameFormat, load_market_layout
from reid.data.datasets.registry import register_dataset
from reid.data.records import ReIDDataset

NAME = "Market-1501"
OFFICIAL_NAMES = ("Market-1501-v15.09.15", "Market-1501", "market1501")
NAME_FORMAT = NameFormat(
    pattern=re.compile(r"(?P<pid>-1|\d+)_c(?P<camid>\d+)s\d+_\d+_\d+\.jpg"),
    example="0002_c1s1_000451_03.jpg",
    pid_range=(-1, 1501),
    cam_range=(1, 6),
    junk_pid=-1,
    distractor_pid=0,
)


@register_dataset("market1501", folder="Market-1501-v15.09.15", name_format=NAME_FORMAT)
def load_market1501(root: str | Path) -> ReIDDataset:
    """Parse Market-1501 from its folder or from the parent holding ``Market-1501-v15.09.15``."""
    return load_market_layout(root, NAME, OFFICIAL_NAMES, NAME_FORMAT)
