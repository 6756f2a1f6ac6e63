"""Exact mid-epoch resume of supervised training: sampler position and per-item augmentation seeds.

Lightning 2.6 restores the loop counters of a mid-epoch checkpoint but restarts the dataloader at
the beginning of the epoch, and random augmentations depend on the global RNG state at the time of
the kill. Here the training stream is made a pure function of ``(seed, epoch, slot)``:

* :class:`ResumableKeySampler` wraps the epoch plan of a sampler (the P x K
  :class:`~reid.data.samplers.IdentitySampler`) and yields :class:`SampleKey` ``(epoch, slot, index)``,
  skipping the batches a checkpoint records as consumed (:func:`train_position`);
* :class:`ItemSeededDataset` runs the wrapped dataset's transform under a torch RNG seeded by
  :func:`item_seed` of that key, independent of workers and of what ran before;
* :class:`ReseedEveryStep` reseeds the model's randomness (dropout, drop path) from the global
  step, so a resumed run draws the same masks as the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class EpochSampler(Protocol, Sized):
    def set_epoch(self, epoch: int) -> None: ...
    def __iter__(self) -> Iterator[int]: ...


@dataclass(frozen=True)
class TrainPosition:
    """Where the training stream stands: the epoch and the batches of it already trained on."""

    epoch: int = 0
    batches_done: int = 0


class SampleKey(NamedTuple):
    """One training item: the epoch, its slot in this rank's stream of that epoch, the dataset index."""

    epoch: int
    slot: int
    index: int


ITEM_STREAM, STEP_STREAM = 0, 1
"""Seeds of data items and of model steps come from separate streams."""


def item_seed(seed: int, epoch: int, slot: int, rank: int = 0, stream: int = ITEM_STREAM) -> int:
    """A 64-bit seed for one item (or step) of the stream, well mixed (``numpy.random.SeedSequence``)."""
    values = (seed, epoch, slot, rank, stream)
    if min(values) < 0:
        raise ValueError(f"item_seed: seed, epoch, slot, rank and stream must be >= 0, got {values}")
    state = np.random.SeedSequence(list(values)).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def train_position(trainer: L.Trainer) -> TrainPosition:
    """The position a checkpoint written now must record.

    ``batch_progress.current.processed`` counts the batches whose training step finished in the
    current epoch, which is what Lightning itself restarts from (a checkpoint written in
    ``on_train_batch_end`` includes that batch; one written at epoch end holds a full epoch, and
    Lightning then resumes at the next epoch, where the recorded position no longer applies).
    """
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    return TrainPosition(epoch=int(trainer.current_epoch), batches_done=int(progress.processed))


class ResumableKeySampler(Sampler[SampleKey]):
    """Yields :class:`SampleKey` for the items of ``sampler``'s epoch, from a resume position on.

    Args:
        sampler: yields dataset indices for the epoch set by ``set_epoch`` (deterministically).
        batch_size: items per batch on this rank (the unit of ``TrainPosition.batches_done``).
    """

    def __init__(self, sampler: EpochSampler, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"ResumableKeySampler: batch_size must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.epoch = 0
        self._resume: TrainPosition | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def resume_from(self, position: TrainPosition) -> None:
        """The next iteration over ``position.epoch`` skips its first ``batches_done`` batches."""
        if position.batches_done < 0:
            raise ValueError(f"ResumableKeySampler: batches_done must be >= 0, got {position.batches_done}")
        self._resume = position

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[SampleKey]:
        indices = list(self.sampler)
        start = 0
        if self._resume is not None and self._resume.epoch == self.epoch:
            start = min(self._resume.batches_done * self.batch_size, len(indices))
        self._resume = None
        epoch = self.epoch
        return (SampleKey(epoch, slot, indices[slot]) for slot in range(start, len(indices)))


class ItemSeededDataset(Dataset):
    """``dataset[key.index]`` computed under a torch RNG seeded by ``item_seed(seed, *key, rank)``.

    The global RNG is restored afterwards (``torch.random.fork_rng``), so nothing else sees the
    reseeding. Random transforms must draw from torch's global generator (torchvision's do).
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0) -> None:
        self.dataset = dataset
        self.seed = seed
        self.rank = rank

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey) -> Any:
        if not isinstance(key, tuple) or len(key) != 3:
            raise TypeError(f"ItemSeededDataset: expected a SampleKey (epoch, slot, index), got {key!r}")
        epoch, slot, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, slot, self.rank))
            return self.dataset[index]


class ReseedEveryStep(L.Callback):
    """Seeds torch's global RNG from ``(seed, epoch, batch_idx, rank)`` before every training step.

    Dropout and drop-path masks then depend only on the position in training, so a run resumed
    from a checkpoint draws exactly the masks of the uninterrupted run.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        epoch, rank = trainer.current_epoch, trainer.global_rank
        torch.manual_seed(item_seed(self.seed, epoch, batch_idx, rank, stream=STEP_STREAM))


__all__ = [
    "ITEM_STREAM",
    "STEP_STREAM",
    "ItemSeededDataset",
    "ReseedEveryStep",
    "ResumableKeySampler",
    "SampleKey",
    "TrainPosition",
    "item_seed",
    "train_position",
]
