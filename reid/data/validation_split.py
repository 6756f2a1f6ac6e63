"""A validation split carved from the training identities, for choosing weights without the test split.

The official recipes report the last epoch's weights (their test scripts load ``*_120.pth``) and never
choose on the test split. A run that does choose (``selection=best``: the checkpoint with the best
``val/mAP``) must validate on images of identities it does not train on and that the test does not
hold: :func:`hold_out_identities` takes ``count`` training identities seen by at least two cameras,
seeded, out of the training split and turns their images into a query / gallery set: one random image
per identity and camera is a query, and every image of those identities is in the gallery. The
evaluation protocol ignores a query's same-identity, same-camera gallery images (its own among them),
so each query searches for its identity in the other cameras, as a Market-1501 query does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from reid.data.records import Record, relabel


class HeldOut(NamedTuple):
    """The training split without the held-out identities (relabelled ``0..N-1``) and their query/gallery."""

    train: list[Record]
    query: list[Record]
    gallery: list[Record]


def hold_out_identities(train: Sequence[Record], count: int, seed: int) -> HeldOut:
    """Hold ``count`` identities of ``train`` out as a validation query / gallery (module docstring).

    Raises ValueError, naming ``data.val_identities``, when fewer than ``count`` identities have images
    from two cameras, or when no identity would be left to train on.
    """
    if count < 0:
        raise ValueError(f"data.val_identities={count}: expected an integer >= 0")
    images: dict[int, list[Record]] = defaultdict(list)
    for record in train:
        images[record.pid].append(record)
    eligible = sorted(pid for pid, records in images.items() if len({r.camid for r in records}) > 1)
    if count > len(eligible) or count >= len(images):
        raise ValueError(
            f"data.val_identities={count}: the training split has {len(images)} identities, "
            f"{len(eligible)} of them seen by two or more cameras; hold out fewer (a validation identity "
            "needs two cameras, and some must be left to train on)"
        )
    rng = np.random.default_rng([seed, count])
    held = {int(pid) for pid in rng.choice(eligible, size=count, replace=False)}
    query: list[Record] = []
    gallery: list[Record] = []
    for pid in sorted(held):
        by_camera: dict[int, list[Record]] = defaultdict(list)
        for record in images[pid]:
            by_camera[record.camid].append(record)
        query.extend(
            by_camera[camid][int(rng.integers(len(by_camera[camid])))] for camid in sorted(by_camera)
        )
        gallery.extend(images[pid])
    kept = relabel([r for r in train if r.pid not in held])
    return HeldOut(kept, query, gallery)
