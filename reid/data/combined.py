"""Multi-source training: the union of the train splits of several labelled datasets.

Domain-generalisation protocols ("M+D -> MSMT17") train one model on several datasets and test it on an
unseen one. ``data.extra_train_datasets`` names the sources added to ``data.dataset``; source ``k`` keeps
its records (paths, order) with its identities and cameras moved past those of sources ``0..k-1``:

    pid'   = pid   + sum_{j<k} N_j      (N_j: train identities of source j)
    camid' = camid + sum_{j<k} C_j      (C_j: cameras of source j, 1 + its largest camera id)

so no person and no camera of one dataset is taken for one of another; the classifier has
``sum_k N_k`` outputs and the camera table of SIE ``sum_k C_k`` rows. This is torchreid's
``Dataset.__add__`` (``torchreid/data/datasets/dataset.py``: ``pid += self.num_train_pids``,
``camid += self.num_train_cams``, over the train split only, the query and gallery of the first
dataset kept). Two deliberate differences: the camera offset counts *every* split's cameras of the
earlier sources, because source 0's query and gallery stay in the union with their camera ids and must
not share a camera with source 1's training images (for Market, Duke and MSMT17 the train split holds
every camera, so the offsets are torchreid's); and a train split whose identities are not the
relabelled ``0..N-1`` of the data contract (``reid.data.records``) is refused rather than offset into
a collision. fast-reid (``fastreid/data/build.py``, ``common.py``) gets the same classes another way:
each dataset prefixes its train pids and camids with its name, and ``CommDataset`` relabels the sorted
strings, so its labels are a permutation of these (the same counts, the same disjointness).

Views are not offset: a viewpoint label (TransReID's VeRi orientation classes) names a direction of the
object, the same in every dataset, so the union has ``max_k V_k`` views. A source without view labels
(VehicleID, every image at view 0) then shares view 0 with VeRi's; with the camera x view table of SIE
its images still get rows of their own, through their own cameras.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from reid.data.records import Record, ReIDDataset

log = logging.getLogger("reid")

KEY = "data.extra_train_datasets"


class TrainSource(NamedTuple):
    """One dataset of the union: its name, size and where its labels start in the union."""

    name: str
    num_images: int
    num_ids: int
    num_cameras: int
    num_views: int
    pid_offset: int
    camid_offset: int


@dataclass
class CombinedDataset(ReIDDataset):
    """The union's train split, the first source's query and gallery, and the sources it was made of.

    Cameras are the sum over ``sources`` and views their maximum (identities are disjoint, so the train
    split's count is their sum), not what the records happen to show: a source's camera rows exist even
    for a camera that only its (dropped) query or gallery shows.
    """

    sources: tuple[TrainSource, ...] = field(default=())

    @property
    def num_cameras(self) -> int:
        return sum(source.num_cameras for source in self.sources)

    @property
    def num_views(self) -> int:
        return max((source.num_views for source in self.sources), default=1)


def _check_relabelled(name: str, train: Sequence[Record]) -> int:
    """The number of identities of a train split whose pids are ``0..N-1``; else a clear error."""
    pids = {r.pid for r in train}
    if pids != set(range(len(pids))):
        raise ValueError(
            f"{KEY}: dataset {name!r}: train identities must be relabelled to 0..{len(pids) - 1} (the data "
            f"contract of reid.data.records), got pids from {min(pids)} to {max(pids)}; relabel them "
            "in its loader (reid.data.records.relabel)"
        )
    return len(pids)


def _refuse_shared_images(datasets: Sequence[tuple[str, ReIDDataset]]) -> None:
    """An image in the train splits of two sources: the same dataset listed twice (under two names)."""
    owner: dict[str, str] = {}
    for name, data in datasets:
        for record in data.train:
            first = owner.setdefault(record.path, name)
            if first != name:
                raise ValueError(
                    f"{KEY}: dataset {name!r} holds {record.path}, a training image of {first!r} too: the "
                    "same dataset is listed twice"
                )


def combine_train_splits(primary: ReIDDataset, extras: Mapping[str, ReIDDataset]) -> CombinedDataset:
    """``primary`` with the train splits of ``extras`` appended, in order, their labels offset.

    Raises:
        ValueError: for a source with an empty train split, train pids that are not ``0..N-1``, or an
            image path found in two sources (the same dataset listed twice), naming the source(s).
    """
    datasets = [(primary.name, primary), *extras.items()]  # a list: an extra may share primary's name
    train: list[Record] = []
    sources: list[TrainSource] = []
    pid_offset = camid_offset = 0
    for name, data in datasets:
        if not data.train:
            raise ValueError(f"{KEY}: dataset {name!r} has an empty train split: nothing to add")
        num_ids = _check_relabelled(name, data.train)
        train += [
            dataclasses.replace(r, pid=r.pid + pid_offset, camid=r.camid + camid_offset) for r in data.train
        ]
        shape = (len(data.train), num_ids, data.num_cameras, data.num_views)
        sources.append(TrainSource(name, *shape, pid_offset, camid_offset))
        pid_offset, camid_offset = pid_offset + num_ids, camid_offset + data.num_cameras
    _refuse_shared_images(datasets)
    return CombinedDataset(
        name="+".join(name for name, _ in datasets),
        train=train,
        query=primary.query,
        gallery=primary.gallery,
        trials=primary.trials,
        sources=tuple(sources),
    )


def source_loaders(
    value: Mapping[str, Callable[[], ReIDDataset]] | None,
) -> dict[str, Callable[[], ReIDDataset]]:
    """``data.extra_train_datasets`` checked: ``{name: zero-argument loader}``, empty for ``None``.

    Raises:
        ValueError: for a value that is not ``{name: loader}`` (an unresolved list of option names).
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(callable(load) for load in value.values()):
        raise ValueError(
            f"{KEY}={value!r}: expected {{name: dataset loader}}; a list of dataset names is "
            "resolved by reid.run (reid.dataset_options.resolve_dataset_names)"
        )
    return dict(value)


def load_sources(loaders: Mapping[str, Callable[[], ReIDDataset]]) -> dict[str, ReIDDataset]:
    """Every source loaded, in order.

    Raises:
        RuntimeError: when a source's loader fails, naming the source (the loader's error chained).
    """
    loaded = {}
    for name, load in loaders.items():
        try:
            loaded[name] = load()
        except Exception as error:
            raise RuntimeError(f"{KEY}.{name}: its loader failed: {type(error).__name__}: {error}") from error
    return loaded


def log_sources(data: CombinedDataset) -> None:
    """One line per source: name, images, identities, cameras and the label ranges it took."""
    for source in data.sources:
        log.info(
            "train source %s: %d images, %d ids (%d-%d), %d cameras (%d-%d)",
            source.name, source.num_images, source.num_ids, source.pid_offset,
            source.pid_offset + source.num_ids - 1, source.num_cameras, source.camid_offset,
            source.camid_offset + source.num_cameras - 1,
        )  # fmt: skip
