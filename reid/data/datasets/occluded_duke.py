"""Occluded-Duke (Miao et al., "Pose-Guided Feature Alignment for Occluded Person
Re-Identification", ICCV 2019): a re-split of DukeMTMC-reID whose queries are all occluded.

Source: https://github.com/lightas/Occluded-DukeMTMC-Dataset (release ``Occluded_Duke``).

Layout (same as DukeMTMC-reID)::

    Occluded_Duke/
        bounding_box_train/   0001_c2_f0046182.jpg ...
        query/
        bounding_box_test/

File name ``PPPP_cC_fFFFFFFF.jpg``: identity, camera ``C`` in 1..8 (stored 0-based), frame.

Statistics:

    ===========  =======  =====
    split         images   ids
    ===========  =======  =====
    train         15,618    702
    query          2,210    519
    gallery       17,661  1,110
    ===========  =======  =====

8 cameras.
"""

from __future__ import annotations

from pathlib import Path

from reid.data.datasets.dukemtmc import NAME_FORMAT
from reid.data.datasets.market_layout import load_market_layout
from reid.data.datasets.registry import register_dataset
from reid.data.records import ReIDDataset

NAME = "Occluded-Duke"
OFFICIAL_NAMES = ("Occluded_Duke", "Occluded-Duke", "occluded_duke")


@register_dataset("occ_duke", folder="Occluded_Duke")
def load_occluded_duke(root: str | Path) -> ReIDDataset:
    """Parse Occluded-Duke from its folder or from the parent holding ``Occluded_Duke``."""
    return load_market_layout(root, NAME, OFFICIAL_NAMES, NAME_FORMAT)
