"""The supervised datamodule: P x K training batches and a query + gallery validation set.

The dataset is given as a partial loader (a ``data/dataset`` group option) and parsed once in
:meth:`ReIDDataModule.setup`. For cross-domain experiments ``test_datasets`` maps target names to
other loaders (``data.test_datasets=[dukemtmc,msmt17]`` in a run, resolved by
``reid.dataset_options``): the model trains on ``dataset.train`` and is evaluated on each target's
query and gallery, one validation/test dataloader per target, in the order given. Without targets
it is evaluated on the training dataset's query and gallery. ``extra_train_datasets`` (multi-source
training, ``data.extra_train_datasets=[dukemtmc]``) adds other loaders' train splits to
``dataset.train``, their identities and cameras disjoint from its own (``reid.data.combined``).

Training is resumable mid-epoch and exact: the P x K plan is a function of (seed, epoch), each
item's augmentation is seeded by its (epoch, slot) in the stream, and the training loader's
``state_dict`` (saved by Lightning in every checkpoint) records the epoch and the batches already
consumed, which the sampler skips on resume, at any worker count (``reid.data.resumable``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import lightning as L
from torch.utils.data import DataLoader, DistributedSampler

from reid.data.combined import combine_train_splits, load_sources, log_sources, source_loaders
from reid.data.image_dataset import ImageDataset, check_image_headers, decode_images
from reid.data.loading import loader_options, world_of
from reid.data.records import DatasetInfo, ReIDDataset, Trial
from reid.data.resumable import (
    ItemSeededDataset,
    ResumableDataLoader,
    ResumableKeySampler,
    TrainPosition,
    train_position,
)
from reid.data.samplers import IdentitySampler
from reid.data.setting_checks import require_image_size, require_int
from reid.data.transforms import ReIDTransforms
from reid.data.validation_split import hold_out_identities

log = logging.getLogger("reid")


class EvaluationTarget(NamedTuple):
    """One evaluation dataloader: its name (metric names, results), query count and VehicleID trials."""

    name: str
    num_query: int
    trials: tuple[Trial, ...]


def _target_loaders(
    test_datasets: Mapping[str, Callable[[], ReIDDataset]] | None,
) -> dict[str, Callable[[], ReIDDataset]]:
    """``data.test_datasets`` checked: target name -> zero-argument loader (empty: the training data)."""
    if test_datasets is None:
        return {}
    if not isinstance(test_datasets, Mapping):
        raise ValueError(
            f"data.test_datasets={test_datasets!r}: expected {{name: dataset loader}}; a list of "
            "dataset names is resolved by reid.run (reid.dataset_options.resolve_test_datasets)"
        )
    for name, load in test_datasets.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(
                f"data.test_datasets: target name {name!r}: expected a non-empty name without '/' (it is "
                "part of the metric names test/<name>/mAP)"
            )
        if not callable(load):
            raise ValueError(
                f"data.test_datasets.{name}={load!r}: expected a dataset loader (a dataset config with "
                "_target_ and _partial_: true)"
            )
    return dict(test_datasets)


class ReIDDataModule(L.LightningDataModule):
    """Args:
    dataset: zero-argument callable returning the :class:`ReIDDataset` to train on.
    test_datasets: ``{name: loader}`` of the evaluation targets (other domains), evaluated in this
        order; ``None`` or empty: the training dataset's query and gallery.
    extra_train_datasets: ``{name: loader}`` whose train splits are added to ``dataset``'s (in this
        order, labels offset: :func:`~reid.data.combined.combine_train_splits`); ``None``: ``dataset``'s.
    image_size: ``[height, width]`` fed to the network.
    batch_size: the recipe's global batch (P x K images a step); ``W`` processes take ``batch_size / W``
        each, whole identities (``reid.data.samplers``).
    num_instances: K, images per identity in a batch.
    min_image_side: images with a side shorter than this (one ViT patch) are reported at setup.
    transforms: the recipe family's train and test pipelines (``conf/data/transforms``); ``None``:
        TransReID's.
    val_identities: training identities held out as the validation query/gallery
        (``reid.data.validation_split``), so that ``val/*`` never comes from the test split; 0: validation
        scores the evaluation targets (a learning curve, as the official loops log it; the weights a run
        reports are then never chosen on it: ``selection=last``).

    decode_check_max_images: the evaluation images (every target's query and gallery, the held-out
        validation identities) are decoded once at setup, in parallel, when there are at most this many
        (0: never): a truncated JPEG then fails before training rather than at the first evaluation.
        100,000 covers MSMT17 (93,820; about a minute on 2 cores, ~10 s on 16).

    Setup parses the dataset(s) and reads the header of every image of every split of every target
    (size only, no pixels), so that a zero-byte, corrupt or non-image file fails before the first
    step, by path; then decodes the evaluation images (``decode_check_max_images``).
    """

    def __init__(
        self,
        dataset: Callable[[], ReIDDataset],
        test_datasets: Mapping[str, Callable[[], ReIDDataset]] | None = None,
        extra_train_datasets: Mapping[str, Callable[[], ReIDDataset]] | None = None,
        image_size: Sequence[int] = (256, 128),
        batch_size: int = 64,
        num_instances: int = 4,
        test_batch_size: int = 256,
        num_workers: int = 8,
        pixel_mean: Sequence[float] = (0.5, 0.5, 0.5),
        pixel_std: Sequence[float] = (0.5, 0.5, 0.5),
        transforms: ReIDTransforms | None = None,
        seed: int = 0,
        min_image_side: int = 16,
        val_identities: int = 0,
        decode_check_max_images: int = 100_000,
    ) -> None:
        super().__init__()
        self.decode_check_max_images = require_int("decode_check_max_images", decode_check_max_images, 0)
        for key, value in (("batch_size", batch_size), ("test_batch_size", test_batch_size)):
            require_int(key, value, 1, "images per step")
        require_int("num_instances", num_instances, 1, "images per identity in a batch")
        require_int("num_workers", num_workers, 0)
        self.min_image_side = min_image_side
        self.load_dataset = dataset
        self.load_test_datasets = _target_loaders(test_datasets)
        self.load_extra_train_datasets = source_loaders(extra_train_datasets)
        self.image_size = require_image_size("image_size", image_size)
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.test_batch_size = test_batch_size
        self.num_workers = num_workers
        self.pixel_mean = tuple(pixel_mean)
        self.pixel_std = tuple(pixel_std)
        self.transforms = transforms if transforms is not None else ReIDTransforms()
        self.seed = seed
        self.val_identities = require_int("val_identities", val_identities, 0)
        self.val_data: ReIDDataset | None = None
        """The held-out validation identities' query and gallery (``val_identities > 0``)."""
        self.train_data: ReIDDataset | None = None
        self.test_sets: dict[str, ReIDDataset] = {}
        """The evaluation targets by name, in evaluation order (the training data without targets)."""

    @property
    def parsed_train_data(self) -> ReIDDataset:
        """The training dataset, parsed by :meth:`setup` (which this calls first)."""
        self.setup()
        assert self.train_data is not None  # setup() sets it or raises
        return self.train_data

    def setup(self, stage: str | None = None) -> None:
        """Parse the dataset(s) once; later calls are no-ops."""
        if self.train_data is not None:
            return
        train_data = self.load_dataset()
        if not train_data.train:
            raise ValueError(f"dataset '{train_data.name}' has an empty train split")
        extras = load_sources(self.load_extra_train_datasets)
        test_sets = {name: load() for name, load in self.load_test_datasets.items()}
        test_sets = test_sets or {train_data.name: train_data}
        if extras:
            train_data = combine_train_splits(train_data, extras)
            log_sources(train_data)
        if self.val_identities:
            held = hold_out_identities(train_data.train, self.val_identities, self.seed)
            self.val_data = ReIDDataset(f"{train_data.name} held-out", [], held.query, held.gallery)
            train_data = dataclasses.replace(train_data, train=held.train)
            log.info(
                "validation: %d training identities held out (%d queries, %d gallery images); %d train on",
                self.val_identities, len(held.query), len(held.gallery), train_data.num_train_pids,
            )  # fmt: skip
        for name, data in test_sets.items():
            target = f"dataset '{data.name}'" + (f" (test target '{name}')" if name != data.name else "")
            if not data.query:
                raise ValueError(f"{target} has an empty query split")
            if not data.gallery and not data.trials:
                raise ValueError(f"{target} has an empty gallery split")
        self.train_data, self.test_sets = train_data, test_sets
        self._check_images()

    @property
    def test_data(self) -> ReIDDataset:
        """The first evaluation target (the one plain ``val/mAP`` and ``test/mAP`` are about)."""
        self.setup()
        return next(iter(self.test_sets.values()))

    def _check_images(self) -> None:
        """Every split's image headers (a missing, empty or non-image file raises, naming it): the
        training split and every target's query and gallery."""
        start, checked = time.perf_counter(), 0
        splits = [(self.parsed_train_data.name, "train", self.parsed_train_data.train)]
        for data in self.test_sets.values():
            splits += [(data.name, "query", data.query), (data.name, "gallery", data.gallery)]
        for name, split, records in splits:
            small = check_image_headers([r.path for r in records], f"{name} {split}", self.min_image_side)
            checked += len(records)
            if small:
                log.warning(
                    "%d %s %s images are smaller than %d px on a side (one patch), upscaled to %s they carry "
                    "little: %s", len(small), name, split, self.min_image_side, list(self.image_size),
                    "; ".join(small[:5]) + (f"; ... (+{len(small) - 5} more)" if len(small) > 5 else ""),
                )  # fmt: skip
        log.info("checked the headers of %d images in %.1f s", checked, time.perf_counter() - start)
        self._decode_evaluation_images()

    def _decode_evaluation_images(self) -> None:
        """Decode the query and gallery images of every target (and of the validation identities) once."""
        sets = [*self.test_sets.values(), *([self.val_data] if self.val_data is not None else [])]
        splits = [(f"{d.name} {split}", getattr(d, split)) for d in sets for split in ("query", "gallery")]
        total = sum(len(records) for _, records in splits)
        if total > self.decode_check_max_images:
            log.info(
                "%d evaluation images, more than data.decode_check_max_images=%d: their pixels are first "
                "decoded at the first evaluation", total, self.decode_check_max_images,
            )  # fmt: skip
            return
        start = time.perf_counter()
        for split, records in splits:
            decode_images([r.path for r in records], split)
        log.info("decoded the %d evaluation images in %.1f s", total, time.perf_counter() - start)

    @property
    def info(self) -> DatasetInfo:
        """Identities and cameras the model must be built for (cameras/views over every domain: the
        SIE tables are indexed by the camera ids of the training and of every target's images)."""
        train_data = self.parsed_train_data
        domains = [train_data, *self.test_sets.values()]
        return DatasetInfo(
            num_classes=train_data.num_train_pids,
            num_cameras=max(data.num_cameras for data in domains),
            num_views=max(data.num_views for data in domains),
        )

    @property
    def num_query(self) -> int:
        """Queries of the first target."""
        return len(self.test_data.query)

    @property
    def evaluation_targets(self) -> list[EvaluationTarget]:
        """One entry per test dataloader, in dataloader order."""
        self.setup()
        sets = self.test_sets.items()
        return [EvaluationTarget(name, len(data.query), tuple(data.trials)) for name, data in sets]

    @property
    def validation_targets(self) -> list[EvaluationTarget]:
        """One entry per validation dataloader: the held-out identities, else the evaluation targets."""
        self.setup()
        if self.val_data is None:
            return self.evaluation_targets
        return [EvaluationTarget("", len(self.val_data.query), ())]

    def train_dataloader(self) -> ResumableDataLoader:
        world_size, rank = world_of(self)
        records = self.parsed_train_data.train
        transform = self.transforms.train(self.image_size, self.pixel_mean, self.pixel_std)
        identities = IdentitySampler(
            [r.pid for r in records],
            batch_size=self.batch_size,
            num_instances=self.num_instances,
            seed=self.seed,
            num_replicas=world_size,
            rank=rank,
        )
        position = self._train_position()  # the loader is rebuilt every epoch: its length is this epoch's
        identities.set_epoch(position.epoch if position is not None else 0)
        return ResumableDataLoader(
            ItemSeededDataset(ImageDataset(records, transform), self.seed),
            batch_size=self.batch_size // world_size,
            sampler=ResumableKeySampler(identities, self.batch_size // world_size, world_size, rank),
            position=self._train_position,
            drop_last=True,
            **loader_options(self.num_workers),
        )

    def _train_position(self) -> TrainPosition | None:
        trainer = getattr(self, "trainer", None)
        return train_position(trainer) if trainer is not None else None

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The held-out identities' query then gallery, or without them :meth:`test_dataloader`'s."""
        self.setup()
        if self.val_data is not None:
            return self._evaluation_loader(self.val_data)
        return self.test_dataloader()

    def _evaluation_loader(self, data: ReIDDataset) -> DataLoader:
        world_size, rank = world_of(self)
        records = [*data.query, *data.gallery]
        dataset = ImageDataset(
            records, self.transforms.test(self.image_size, self.pixel_mean, self.pixel_std)
        )
        sampler: DistributedSampler | None = None
        if world_size > 1:
            # Pads each target's loader with duplicates to equal shards; its evaluator drops them by index.
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        return DataLoader(
            dataset, batch_size=self.test_batch_size, sampler=sampler, **loader_options(self.num_workers)
        )

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """Per target, query records followed by gallery records (``index < num_query`` marks a query);
        one loader with one target, a list in :attr:`evaluation_targets` order with several."""
        self.setup()
        loaders = [self._evaluation_loader(data) for data in self.test_sets.values()]
        return loaders[0] if len(loaders) == 1 else loaders
