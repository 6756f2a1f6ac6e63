"""PKU VehicleID (Liu et al., "Deep Relative Distance Learning: Tell the Difference Between
Similar Vehicles", CVPR 2016).

Source: https://pkuml.org/resources/pku-vehicleid.html (release ``VehicleID_V1.0``).

Layout::

    VehicleID_V1.0/
        image/                 0000001.jpg ...
        train_test_split/      train_list.txt  test_list_800.txt  test_list_1600.txt  test_list_2400.txt

List line ``<image name without .jpg> <vehicle id>``, e.g. ``0004100 1234``. There are no cameras:
every ``camid`` is 0, so the evaluator must not apply the same-camera filter to trials.

Protocol: the test list of the chosen size (800, 1600 or 2400 vehicles) is one pool. For each of
``num_trials`` trials one random image per vehicle goes to the gallery and the rest are queries;
the scores are averaged over trials. Here ``query`` holds *all* test images, ``gallery`` is empty
and ``trials`` holds the index re-splits of ``query``; trial ``t`` is drawn from
``numpy.random.default_rng((seed, t))``, so trials are reproducible and differ across seeds.

Statistics:

    =============  ========  =======
    split            images      ids
    =============  ========  =======
    train           110,178   13,134
    test (small)      6,493      800
    test (medium)    13,377    1,600
    test (large)     19,777    2,400
    =============  ========  =======

No camera labels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from reid.data.datasets.errors import (
    DatasetFormatError,
    DatasetLayoutError,
    read_lines,
    require_file,
    resolve_root,
)
from reid.data.datasets.registry import register_dataset
from reid.data.records import Record, ReIDDataset, Trial, relabel

NAME = "VehicleID"
OFFICIAL_NAMES = ("VehicleID_V1.0", "VehicleID", "vehicleid")
REQUIRED = ("image", "train_test_split")


def parse_list(list_path: Path, image_dir: Path) -> list[Record]:
    """Records of a ``<image name> <vehicle id>`` list file (camid 0)."""
    lines = read_lines(list_path)
    if not lines:
        raise DatasetLayoutError(f"{NAME} list file {list_path} is empty; expected '<image> <id>' lines")
    records, prefix = [], str(image_dir)
    for n, line in lines:
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise DatasetFormatError(
                f"{NAME} list line {list_path}:{n} is {line!r}; expected '<image name> <vehicle id>', "
                "e.g. '0004100 1234'"
            )
        name = fields[0] if fields[0].lower().endswith(".jpg") else fields[0] + ".jpg"
        records.append(Record(os.path.join(prefix, name), int(fields[1]), 0))
    return records


def make_trials(pids: np.ndarray, num_trials: int, seed: int) -> tuple[Trial, ...]:
    """Re-split a test pool: per trial one random image per identity to the gallery, rest query.

    Returns sorted index arrays into the pool (``pids``), one :class:`Trial` per trial.
    """
    if num_trials < 1:
        raise ValueError(f"{NAME} num_trials={num_trials}; expected at least 1")
    order = np.argsort(pids, kind="stable")
    _, starts, counts = np.unique(pids[order], return_index=True, return_counts=True)
    trials = []
    for trial in range(num_trials):
        rng = np.random.default_rng((seed, trial))
        picks = order[starts + rng.integers(0, counts)]
        gallery = np.sort(picks)
        query = np.setdiff1d(np.arange(len(pids)), gallery)
        trials.append(Trial(query_index=query, gallery_index=gallery))
    return tuple(trials)


def find_test_list(split_dir: Path, test_size: int) -> Path:
    """``train_test_split/test_list_<test_size>.txt``, or an error listing the available sizes."""
    path = split_dir / f"test_list_{test_size}.txt"
    if not path.is_file():
        available = sorted(p.name for p in split_dir.glob("test_list_*.txt"))
        raise DatasetLayoutError(
            f"{NAME} test_size={test_size}: no file {path}; available test lists: {available or 'none'}"
        )
    return path


@register_dataset("vehicleid", folder="VehicleID_V1.0", datamodule={"image_size": [256, 256]})
def load_vehicleid(
    root: str | Path, test_size: int = 800, num_trials: int = 10, seed: int = 0
) -> ReIDDataset:
    """Parse VehicleID from its folder or the parent holding ``VehicleID_V1.0``.

    ``query`` holds every image of ``test_list_<test_size>.txt``; ``trials`` its re-splits.
    """
    folder = resolve_root(root, NAME, OFFICIAL_NAMES, REQUIRED)
    image_dir, split_dir = folder / "image", folder / "train_test_split"
    train = parse_list(require_file(split_dir / "train_list.txt", NAME, "train list"), image_dir)
    test = parse_list(find_test_list(split_dir, test_size), image_dir)
    pids = np.fromiter((r.pid for r in test), dtype=np.int64, count=len(test))
    return ReIDDataset(
        name=f"{NAME}-{test_size}",
        train=relabel(train),
        query=test,
        gallery=[],
        trials=make_trials(pids, num_trials, seed),
    )
