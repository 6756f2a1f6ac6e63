"""The supervised datamodule: P x K training batches and a query + gallery validation set.

The dataset is given as a partial loader (``conf/dataset/*.yaml``) and parsed once in
:meth:`ReIDDataModule.setup`. For cross-domain experiments ``test_dataset`` names another loader:
the model trains on ``dataset.train`` and is evaluated on ``test_dataset``'s query and gallery.

Training is resumable mid-epoch and exact: the P x K plan is a function of (seed, epoch), each
item's augmentation is seeded by its (epoch, slot) in the stream, and the training loader's
``state_dict`` (saved by Lightning in every checkpoint) records the epoch and the batches already
consumed, which the sampler skips on resume, at any worker count (``reid.training.resumable``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import lightning as L
from torch.utils.data import DataLoader, DistributedSampler

from reid.data.image_dataset import ImageDataset, check_image_headers
from reid.data.loading import loader_options, world_of
from reid.data.records import DatasetInfo, ReIDDataset
from reid.data.samplers import IdentitySampler
from reid.data.transforms import TrainAugment, build_test_transform, build_train_transform
from reid.training.resumable import (
    ItemSeededDataset,
    ResumableDataLoader,
    ResumableKeySampler,
    TrainPosition,
    train_position,
)

log = logging.getLogger("reid")


class ReIDDataModule(L.LightningDataModule):
    """Args:
    dataset: zero-argument callable returning the :class:`ReIDDataset` to train on.
    test_dataset: optional loader for evaluation on another domain (defaults to ``dataset``).
    image_size: ``[height, width]`` fed to the network.
    batch_size: images per step per rank (P x K).
    num_instances: K, images per identity in a batch.
    min_image_side: images with a side shorter than this (one ViT patch) are reported at setup.

    Setup parses the dataset(s) and reads the header of every image of every split (size only, no
    pixels), so that a zero-byte, corrupt or non-image file fails before the first step, by path.
    """

    def __init__(
        self,
        dataset: Callable[[], ReIDDataset],
        test_dataset: Callable[[], ReIDDataset] | None = None,
        image_size: Sequence[int] = (256, 128),
        batch_size: int = 64,
        num_instances: int = 4,
        test_batch_size: int = 256,
        num_workers: int = 8,
        pixel_mean: Sequence[float] = (0.5, 0.5, 0.5),
        pixel_std: Sequence[float] = (0.5, 0.5, 0.5),
        augment: TrainAugment | dict | None = None,
        seed: int = 0,
        min_image_side: int = 16,
    ) -> None:
        super().__init__()
        for key, value in (("batch_size", batch_size), ("test_batch_size", test_batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"data.{key}={value!r}: expected a positive integer (images per step)")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"data.num_workers={num_workers!r}: expected an integer >= 0")
        self.min_image_side = min_image_side
        self.load_dataset = dataset
        self.load_test_dataset = test_dataset
        self.image_size = tuple(image_size)
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.test_batch_size = test_batch_size
        self.num_workers = num_workers
        self.pixel_mean = tuple(pixel_mean)
        self.pixel_std = tuple(pixel_std)
        self.augment = TrainAugment(**augment) if isinstance(augment, dict) else augment
        self.seed = seed
        self.train_data: ReIDDataset | None = None
        self.test_data: ReIDDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Parse the dataset(s) once; later calls are no-ops."""
        if self.train_data is not None:
            return
        self.train_data = self.load_dataset()
        self.test_data = self.load_test_dataset() if self.load_test_dataset else self.train_data
        for name, records in (("train", self.train_data.train), ("query", self.test_data.query)):
            if not records:
                raise ValueError(f"dataset '{self.train_data.name}' has an empty {name} split")
        if not self.test_data.gallery and not self.test_data.trials:
            raise ValueError(f"dataset '{self.test_data.name}' has an empty gallery split")
        self._check_images()

    def _check_images(self) -> None:
        """Every split's image headers (a missing, empty or non-image file raises, naming it)."""
        start, checked = time.perf_counter(), 0
        splits = {
            "train": self.train_data.train,
            "query": self.test_data.query,
            "gallery": self.test_data.gallery,
        }
        for split, records in splits.items():
            name = self.train_data.name if split == "train" else self.test_data.name
            small = check_image_headers([r.path for r in records], f"{name} {split}", self.min_image_side)
            checked += len(records)
            if small:
                log.warning(
                    "%d %s %s images are smaller than %d px on a side (one patch), upscaled to %s they carry "
                    "little: %s", len(small), name, split, self.min_image_side, list(self.image_size),
                    "; ".join(small[:5]) + (f"; ... (+{len(small) - 5} more)" if len(small) > 5 else ""),
                )  # fmt: skip
        log.info("checked the headers of %d images in %.1f s", checked, time.perf_counter() - start)

    @property
    def info(self) -> DatasetInfo:
        """Identities and cameras the model must be built for (cameras/views over both domains)."""
        self.setup()
        train, test = self.train_data, self.test_data
        return DatasetInfo(
            num_classes=train.num_train_pids,
            num_cameras=max(train.num_cameras, test.num_cameras),
            num_views=max(train.num_views, test.num_views),
        )

    @property
    def num_query(self) -> int:
        self.setup()
        return len(self.test_data.query)

    def train_dataloader(self) -> ResumableDataLoader:
        self.setup()
        world_size, rank = world_of(self)
        records = self.train_data.train
        transform = build_train_transform(self.image_size, self.pixel_mean, self.pixel_std, self.augment)
        identities = IdentitySampler(
            [r.pid for r in records],
            batch_size=self.batch_size,
            num_instances=self.num_instances,
            seed=self.seed,
            num_replicas=world_size,
            rank=rank,
        )
        return ResumableDataLoader(
            ItemSeededDataset(ImageDataset(records, transform), self.seed, rank),
            batch_size=self.batch_size,
            sampler=ResumableKeySampler(identities, self.batch_size),
            position=self._train_position,
            drop_last=True,
            **loader_options(self.num_workers),
        )

    def _train_position(self) -> TrainPosition | None:
        trainer = getattr(self, "trainer", None)
        return train_position(trainer) if trainer is not None else None

    def val_dataloader(self) -> DataLoader:
        """Query records followed by gallery records; ``index < num_query`` marks a query."""
        self.setup()
        world_size, rank = world_of(self)
        records = [*self.test_data.query, *self.test_data.gallery]
        dataset = ImageDataset(
            records, build_test_transform(self.image_size, self.pixel_mean, self.pixel_std)
        )
        sampler = None
        if world_size > 1:
            # Pads with duplicates to equal shards; the evaluator drops them by index.
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        return DataLoader(
            dataset, batch_size=self.test_batch_size, sampler=sampler, **loader_options(self.num_workers)
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
