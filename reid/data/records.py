"""The one data contract every dataset parser returns and every loader consumes.

A parser turns a dataset root into a :class:`ReIDDataset`: three splits of :class:`Record`, held as
:class:`~reid.data.record_table.RecordTable` (flat arrays that loader workers share; a parser may hand
over lists, which are converted).
Training identities are relabelled to ``0..num_train_pids-1``; query and gallery keep their
original identities (so distractors, pid 0 in Market-1501, stay distinct from real people).
Camera and view ids are 0-based everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from reid.data.record_table import RecordTable

UNLABELLED = -1
"""pid of an image without an identity label (LUPerson, self-supervised use)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One image: where it is and who/where it shows."""

    path: str
    pid: int
    camid: int
    viewid: int = 0


@dataclass(frozen=True)
class Trial:
    """One VehicleID-style evaluation trial.

    Indices point into :attr:`ReIDDataset.query`, which then holds *all* test images; each trial
    re-splits them into a query set and a gallery set (one random image per identity).
    """

    query_index: np.ndarray
    gallery_index: np.ndarray


@dataclass(frozen=True)
class DatasetInfo:
    """What a model must know about the data it is built for."""

    num_classes: int
    num_cameras: int
    num_views: int


SPLITS = ("train", "query", "gallery")


@dataclass
class ReIDDataset:
    """A parsed dataset: train (relabelled), query and gallery records.

    ``trials`` is empty for the single-split protocol (Market, Duke, MSMT17, VeRi). For
    VehicleID it holds the seeded query/gallery re-splits of ``query`` and ``gallery`` is empty.
    """

    name: str
    train: Sequence[Record]
    query: Sequence[Record]
    gallery: Sequence[Record]
    trials: tuple[Trial, ...] = field(default=())

    def __setattr__(self, name: str, value: Any) -> None:
        if name in SPLITS:  # a split is a table, however it is given (at init or assigned later)
            from reid.data.record_table import RecordTable  # it builds Records: imported once both exist

            value = RecordTable.from_records(value)
        super().__setattr__(name, value)

    @property
    def num_train_pids(self) -> int:
        return len(np.unique(cast("RecordTable", self.train).pids))  # a table: __setattr__ converts

    @property
    def num_cameras(self) -> int:
        return 1 + max((int(split.camids.max()) for split in self._splits() if len(split)), default=0)

    @property
    def num_views(self) -> int:
        return 1 + max((int(split.viewids.max()) for split in self._splits() if len(split)), default=0)

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(self.num_train_pids, self.num_cameras, self.num_views)

    def _splits(self) -> tuple[Any, Any, Any]:
        return self.train, self.query, self.gallery

    def summary(self) -> str:
        """A small table of images / identities / cameras per split."""
        lines = [f"{self.name}: split | images | ids | cameras"]
        for split, records in zip(("train", "query", "gallery"), self._splits(), strict=True):
            ids, cams = len(np.unique(records.pids)), len(np.unique(records.camids))
            lines.append(f"  {split:<7} | {len(records):>7} | {ids:>6} | {cams:>3}")
        return "\n".join(lines)


def relabel(records: Sequence[Record]) -> list[Record]:
    """Map the identities of ``records`` to ``0..N-1`` in sorted order of the original pid."""
    mapping = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
    return [Record(r.path, mapping[r.pid], r.camid, r.viewid) for r in records]
