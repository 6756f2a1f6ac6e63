"""The self-supervised datamodule: multi-crop batches of unlabelled images, resumable mid-epoch.

Training images come from a partial loader (LUPerson, or any labelled dataset whose ``train``
split is used without its labels). Each item is decoded and cropped in a worker; the collate
groups crops by resolution so the model runs one forward per resolution:
``{"crops": [Tensor[B,3,Hg,Wg] x 2, Tensor[B,3,Hl,Wl] x n], "regions": long[n], "index": long[B]}``.

Determinism and resume: the sampler yields *keys* ``epoch * N + i`` from a permutation seeded by (seed,
epoch); the crops of key k = epoch N + i are drawn from a generator seeded by ``item_seed(seed, epoch,
i)`` of ``reid.data.resumable`` (its crop stream: the one seeding scheme of the data). The training
loader's state (saved by Lightning in every checkpoint) is (epoch, batches done); on resume the sampler
starts at that position, so an interrupted run sees exactly the batches of an uninterrupted one,
whatever the number of workers (``reid.data.resumable``).

An optional labelled ``monitor_dataset`` provides the kNN monitor's query + gallery loader in the
supervised batch format (``reid.data.image_dataset.ImageDataset``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reid.data.image_dataset import ImageDataset, check_image_headers, decode_images, read_image
from reid.data.loading import loader_options, world_of
from reid.data.multicrop import MultiCropAugmentation
from reid.data.record_table import RecordTable
from reid.data.records import Record, ReIDDataset
from reid.data.resumable import CROP_STREAM, ResumableDataLoader, TrainPosition, item_seed, train_position
from reid.data.setting_checks import require_image_size, require_int

log = logging.getLogger(__name__)


class MultiCropDataset(Dataset):
    """Key ``epoch * N + i`` -> (crops of image i for that epoch, i)."""

    def __init__(self, records: Sequence[Record], augment: MultiCropAugmentation, seed: int = 0) -> None:
        self.records = RecordTable.from_records(records)  # shared by the workers, not copied
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int) -> tuple[list[torch.Tensor], list[int], int]:
        epoch, index = divmod(key, len(self.records))
        seed = item_seed(self.seed, epoch, index, stream=CROP_STREAM)  # the one seeding scheme of the data
        views = self.augment(read_image(self.records[index].path), seed)
        return views.crops, views.regions, index


def collate_multicrop(items: Sequence[tuple[list[torch.Tensor], list[int], int]]) -> dict[str, Any]:
    """Stack crop j of every item into one tensor per crop position (one resolution each)."""
    regions = items[0][1]
    if any(item[1] != regions for item in items):
        raise ValueError("collate_multicrop: items disagree on the local crop regions")
    num_crops = len(items[0][0])
    return {
        "crops": [torch.stack([item[0][j] for item in items]) for j in range(num_crops)],
        "regions": torch.tensor(regions, dtype=torch.long),
        "index": torch.tensor([item[2] for item in items], dtype=torch.long),
    }


SamplerPosition = TrainPosition  # the name this module exported before the position moved to reid.training


class ResumableRandomSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded over ranks, that can start mid-epoch.

    Yields keys ``epoch * num_samples + i``. Every rank gets ``num_samples // world_size`` keys.
    ``resume_from(position)`` makes the next iteration of that epoch skip the consumed batches.
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0
    ) -> None:
        if num_samples < num_replicas * batch_size:
            raise ValueError(
                f"ResumableRandomSampler: {num_samples} images cannot fill one batch of {batch_size} "
                f"on each of {num_replicas} ranks"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._resume: TrainPosition | None = None

    @property
    def per_rank(self) -> int:
        return self.num_samples // self.num_replicas

    @property
    def batches_per_epoch(self) -> int:
        return self.per_rank // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_from(self, position: TrainPosition) -> None:
        if position.batches_done < 0:
            raise ValueError(
                f"ResumableRandomSampler: batches_done must be >= 0, got {position.batches_done}"
            )
        self._resume = position

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=gen)
        shard = order[self.rank : self.per_rank * self.num_replicas : self.num_replicas]
        start = 0
        if self._resume is not None and self._resume.epoch == self.epoch:
            start = self._resume.batches_done * self.batch_size
        self._resume = None
        keys = shard[start:] + self.epoch * self.num_samples
        return iter(keys.tolist())


class SSLDataModule(L.LightningDataModule):
    """Args:
    dataset: zero-argument callable returning the images (``train`` split, labels ignored).
    augment: the :class:`MultiCropAugmentation` (Hydra builds it from ``conf/data/*_ssl.yaml``).
    batch_size: images per rank per step (each gives 2 + n crops).
    monitor_dataset: optional labelled loader whose query + gallery feed the kNN monitor.
    monitor_image_size, pixel_mean, pixel_std: test transform of the monitor set.
    check_images: read every image's header at setup (training and monitor images; a missing, empty
        or non-image file raises, naming it). About 0.2 ms an image from a local disk: ~15 min for the
        4.18 M images of LUPerson, so a run that re-reads a checked copy may set it false.
    decode_check_max_images: the monitor's query and gallery are decoded once at setup, in parallel,
        when there are at most this many (0: never), so a truncated image fails before training.
    """

    def __init__(
        self,
        dataset: Callable[[], ReIDDataset],
        augment: MultiCropAugmentation,
        batch_size: int = 64,
        num_workers: int = 8,
        seed: int = 0,
        monitor_dataset: Callable[[], ReIDDataset] | None = None,
        monitor_image_size: Sequence[int] = (256, 128),
        monitor_batch_size: int = 256,
        pixel_mean: Sequence[float] = (0.5, 0.5, 0.5),
        pixel_std: Sequence[float] = (0.5, 0.5, 0.5),
        check_images: bool = True,
        decode_check_max_images: int = 100_000,
    ) -> None:
        super().__init__()
        require_int("batch_size", batch_size, 1, "images per step")
        require_int("monitor_batch_size", monitor_batch_size, 1, "images per step")
        require_int("num_workers", num_workers, 0)
        self.check_images = check_images
        self.decode_check_max_images = require_int("decode_check_max_images", decode_check_max_images, 0)
        self.load_dataset = dataset
        self.load_monitor_dataset = monitor_dataset
        self.augment = augment
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.monitor_image_size = require_image_size("monitor_image_size", monitor_image_size)
        self.monitor_batch_size = monitor_batch_size
        self.pixel_mean = tuple(pixel_mean)
        self.pixel_std = tuple(pixel_std)
        self.train_records: RecordTable | None = None
        self.monitor_data: ReIDDataset | None = None

    @property
    def parsed_train_records(self) -> RecordTable:
        """The training images, parsed by :meth:`setup` (which this calls first)."""
        self.setup()
        assert self.train_records is not None  # setup() sets it or raises
        return self.train_records

    def setup(self, stage: str | None = None) -> None:
        """Parse the datasets once; later calls are no-ops."""
        if self.train_records is not None:
            return
        data = self.load_dataset()
        if not data.train:
            raise ValueError(f"SSLDataModule: dataset '{data.name}' has no training images")
        self.train_records = RecordTable.from_records(data.train)
        if self.load_monitor_dataset is not None:
            self.monitor_data = self.load_monitor_dataset()
            name = self.monitor_data.name
            if not self.monitor_data.query or not self.monitor_data.gallery:
                raise ValueError(f"SSLDataModule: monitor dataset '{name}' has no query or no gallery images")
        if self.check_images:
            self._check_images(data.name)

    def _check_images(self, name: str) -> None:
        """Headers of the training and monitor images, before the first step."""
        start = time.perf_counter()
        check_image_headers(self.parsed_train_records.paths, f"{name} train")
        checked = len(self.parsed_train_records)
        if self.monitor_data is not None:
            for split in ("query", "gallery"):
                records = getattr(self.monitor_data, split)
                check_image_headers([r.path for r in records], f"{self.monitor_data.name} {split}")
                checked += len(records)
            monitored = len(self.monitor_data.query) + len(self.monitor_data.gallery)
            if monitored <= self.decode_check_max_images:
                for split in ("query", "gallery"):
                    records = getattr(self.monitor_data, split)
                    decode_images([r.path for r in records], f"{self.monitor_data.name} {split}")
        log.info("checked the headers of %d images in %.1f s", checked, time.perf_counter() - start)

    @property
    def info(self) -> None:
        """Self-supervised data has no classes to build a head for."""
        return None

    @property
    def num_query(self) -> int:
        self.setup()
        return len(self.monitor_data.query) if self.monitor_data else 0

    def train_dataloader(self) -> ResumableDataLoader:
        world_size, rank = world_of(self)
        sampler = ResumableRandomSampler(
            len(self.parsed_train_records), self.batch_size, self.seed, num_replicas=world_size, rank=rank
        )
        return ResumableDataLoader(
            MultiCropDataset(self.parsed_train_records, self.augment, self.seed),
            batch_size=self.batch_size,
            sampler=sampler,
            position=self._train_position,
            drop_last=True,
            collate_fn=collate_multicrop,
            **loader_options(self.num_workers),
        )

    def _train_position(self) -> TrainPosition | None:
        trainer = getattr(self, "trainer", None)
        return train_position(trainer) if trainer is not None else None

    def monitor_dataloader(self) -> DataLoader | None:
        """Query then gallery of the monitor set in the supervised batch format (None without one)."""
        self.setup()
        if self.monitor_data is None:
            return None
        from reid.data.transforms import ReIDTransforms

        records = [*self.monitor_data.query, *self.monitor_data.gallery]
        transform = ReIDTransforms().test(self.monitor_image_size, self.pixel_mean, self.pixel_std)
        return DataLoader(ImageDataset(records, transform), batch_size=self.monitor_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader | list:
        """The monitor set (``reid.run``'s final test scores the teacher on it); [] without one."""
        loader = self.monitor_dataloader()
        return [] if loader is None else loader


__all__ = [
    "MultiCropDataset",
    "ResumableRandomSampler",
    "SSLDataModule",
    "SamplerPosition",
    "collate_multicrop",
]
