"""The unsupervised datamodule: the training images without labels, clustered by the task each epoch.

Cluster Contrast's data side (official ``examples/cluster_contrast_train_usl.py``): the training split
is used without its identities. :meth:`UnlabelledDataModule.cluster_dataloader` yields it in dataset
order with the test transform (``get_test_loader(testset=sorted(dataset.train))``) for the features the
task clusters; after :meth:`set_pseudo_labels` the training loader draws P x K batches over the clusters
(:class:`~reid.data.pseudo_label_sampler.PseudoLabelSampler`, ``--iters`` batches an epoch), exactly
resumable mid-epoch as the supervised loader (``reid.data.resumable``). Evaluation is the
supervised datamodule's: query + gallery of the dataset (or of ``test_datasets``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from reid.data.image_dataset import ImageDataset
from reid.data.loading import loader_options, world_of
from reid.data.pseudo_label_sampler import PseudoLabelSampler
from reid.data.records import UNLABELLED, DatasetInfo, Record
from reid.data.reid_datamodule import ReIDDataModule
from reid.data.resumable import ItemSeededDataset, ResumableDataLoader, ResumableKeySampler
from reid.data.setting_checks import require_int


class UnlabelledDataModule(ReIDDataModule):
    """:class:`ReIDDataModule` whose training split has its identities removed (``pid = -1``).

    Args (besides the supervised ones): iterations: training batches per epoch (official ``--iters``).
    """

    def __init__(self, *args: Any, iterations: int = 200, **kwargs: Any) -> None:
        if kwargs.get("val_identities"):
            raise ValueError(
                f"data.val_identities={kwargs['val_identities']}: unsupervised training uses no identity "
                "labels, so none are held out to choose weights on; report the last epoch (selection=last)"
            )
        super().__init__(*args, **kwargs)
        self.iterations = require_int("iterations", iterations, 1, "batches per epoch")
        self._cluster_loader: DataLoader | None = None
        self.pseudo_labels: np.ndarray | None = None
        """The task's latest pseudo labels, one per :attr:`train_records` entry (-1 = outlier)."""

    @property
    def train_records(self) -> list[Record]:
        """The training images in dataset order, without identities."""
        return [dataclasses.replace(r, pid=UNLABELLED) for r in self.parsed_train_data.train]

    @property
    def info(self) -> DatasetInfo:
        """Cameras and views as the supervised datamodule; no identity count (``num_classes`` 0)."""
        return dataclasses.replace(super().info, num_classes=0)

    def set_pseudo_labels(self, labels: np.ndarray) -> None:
        """Labels the next training pass samples from (the task calls this at each epoch start)."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(self.parsed_train_data.train),):
            raise ValueError(
                f"set_pseudo_labels: expected {len(self.parsed_train_data.train)} labels (one per training "
                "image), "
                f"got shape {labels.shape}"
            )
        self.pseudo_labels = labels

    def cluster_dataloader(self) -> DataLoader:
        """Every training image once, in order, with the test transform (items carry ``index``); built
        once, so persistent workers are reused from epoch to epoch."""
        if self._cluster_loader is not None:
            return self._cluster_loader
        transform = self.transforms.test(self.image_size, self.pixel_mean, self.pixel_std)
        dataset = ImageDataset(self.train_records, transform)
        options = loader_options(self.num_workers)
        self._cluster_loader = DataLoader(dataset, batch_size=self.test_batch_size, **options)
        return self._cluster_loader

    def train_dataloader(self) -> ResumableDataLoader:
        world_size, rank = world_of(self)
        records = self.train_records
        sampler = PseudoLabelSampler(
            lambda: self.pseudo_labels,
            [r.camid for r in records],
            batch_size=self.batch_size,
            num_instances=self.num_instances,
            iterations=self.iterations,
            seed=self.seed,
            num_replicas=world_size,
            rank=rank,
        )
        transform = self.transforms.train(self.image_size, self.pixel_mean, self.pixel_std)
        return ResumableDataLoader(
            ItemSeededDataset(ImageDataset(records, transform), self.seed),
            batch_size=self.batch_size // world_size,
            sampler=ResumableKeySampler(sampler, self.batch_size // world_size, world_size, rank),
            position=self._train_position,
            drop_last=True,
            **loader_options(self.num_workers),
        )
