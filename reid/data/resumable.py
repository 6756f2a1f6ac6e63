"""Exact mid-epoch resume of supervised training: sampler position and per-item augmentation seeds.

Lightning 2.6 restores the loop counters of a mid-epoch checkpoint but restarts the dataloader at
the beginning of the epoch, and random augmentations depend on the global RNG state at the time of
the kill. Here the training stream is made a pure function of ``(seed, epoch, slot)``:

* :class:`ResumableKeySampler` wraps the epoch plan of a sampler (the P x K
  :class:`~reid.data.samplers.IdentitySampler`) and yields :class:`SampleKey` ``(epoch, slot, index)``,
  skipping the batches a checkpoint records as consumed (:func:`train_position`); ``slot`` is the item's
  place in the *global* batch stream, the same under any number of processes;
* :class:`ItemSeededDataset` runs the wrapped dataset's transform under a torch RNG seeded by
  :func:`item_seed` of that key, independent of workers, of the process and of what ran before (so N
  processes augment every image of a step as one process does);
* :class:`ResumableDataLoader` starts each pass over the sampler at the first batch request, at
  the position the trainer then stands at (restored loop counters on resume), and exposes that
  position as its ``state_dict`` (the ``_Stateful`` protocol: Lightning saves it in every
  checkpoint and does not warn that the loader is not resumable, because it is);
* :class:`ReseedEveryStep` reseeds the model's randomness (dropout, drop path) from the global
  step, so a resumed run draws the same masks as the uninterrupted one.

Why resume was exact only with ``num_workers=0`` before: Lightning creates the training iterator in
``FitLoop.setup_data``, before it calls ``set_epoch`` for the epoch being resumed, and a worker
iterator prefetches (so runs the sampler's ``__iter__``) as soon as it is created: on resume the
sampler planned epoch 0 and ignored the skip recorded for epoch ``e``. (When ``configure_optimizers``
asks ``trainer.estimated_stepping_batches``, as the TransReID task does, Lightning builds the loader
even before the checkpoint's loops are restored, and never calls the loader's ``load_state_dict``.)
A single-process iterator reads the sampler lazily, after ``set_epoch``, which hid the problem.
Deferring the start of each pass to the first ``next()``, when the loops are restored and the
sampler's epoch is set, makes the stream the same at any worker count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loops.progress import _ProcessedTracker
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochSampler(Protocol, Sized):
    def set_epoch(self, epoch: int) -> None: ...
    def __iter__(self) -> Iterator[int]: ...


class PositionedSampler(Protocol):
    """A sampler whose next iteration can start at a :class:`TrainPosition`."""

    def set_epoch(self, epoch: int) -> None: ...
    def resume_from(self, position: TrainPosition) -> None: ...


@dataclass(frozen=True)
class TrainPosition:
    """Where the training stream stands: the epoch and the batches of it already trained on."""

    epoch: int = 0
    batches_done: int = 0


class SampleKey(NamedTuple):
    """One training item: the epoch, its slot in the global stream of that epoch (``step x global batch
    + position in the global batch``), the dataset index."""

    epoch: int
    slot: int
    item: int  # the dataset index


ITEM_STREAM, STEP_STREAM, CROP_STREAM = 0, 1, 2
"""Seeds of supervised data items (by slot), of model steps, and of pretraining crops (by image index:
``reid.data.ssl_datamodule``) come from separate streams of :func:`item_seed`."""


def item_seed(seed: int, epoch: int, slot: int, rank: int = 0, stream: int = ITEM_STREAM) -> int:
    """A 64-bit seed for one item (or step) of the stream, well mixed (``numpy.random.SeedSequence``)."""
    values = (seed, epoch, slot, rank, stream)
    if min(values) < 0:
        raise ValueError(f"item_seed: seed, epoch, slot, rank and stream must be >= 0, got {values}")
    state = np.random.SeedSequence(list(values)).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def batches_processed(trainer: L.Trainer) -> int:
    """The batches whose training step finished in the current epoch (Lightning's own restart point).

    Lightning keeps the count in ``fit_loop.epoch_loop.batch_progress.current``, declared as a
    ``_ReadyCompletedTracker`` but built as its ``_ProcessedTracker`` subclass; this is the one place that
    reads it, and it fails by name if a Lightning release (pinned in pyproject.toml) builds it otherwise.
    """
    current = trainer.fit_loop.epoch_loop.batch_progress.current
    if not isinstance(current, _ProcessedTracker):
        raise RuntimeError(
            f"lightning {L.__version__}: fit_loop.epoch_loop.batch_progress.current is a "
            f"{type(current).__name__}, not the _ProcessedTracker whose 'processed' count resume relies on"
        )
    return int(current.processed)


def train_position(trainer: L.Trainer) -> TrainPosition:
    """The position a checkpoint written now must record.

    ``batch_progress.current.processed`` counts the batches whose training step finished in the
    current epoch, which is what Lightning itself restarts from (a checkpoint written in
    ``on_train_batch_end`` includes that batch; one written at epoch end holds a full epoch, and
    Lightning then resumes at the next epoch, where the recorded position no longer applies).
    """
    return TrainPosition(epoch=int(trainer.current_epoch), batches_done=batches_processed(trainer))


class ResumableKeySampler(Sampler[SampleKey]):
    """Yields :class:`SampleKey` for the items of ``sampler``'s epoch, from a resume position on.

    Args:
        sampler: yields this rank's dataset indices for the epoch set by ``set_epoch`` (deterministically).
        batch_size: items per batch on this rank (the unit of ``TrainPosition.batches_done``).
        num_replicas, rank: the process group; rank ``r``'s batch is the ``r``-th share of each global batch
            of ``batch_size x num_replicas`` items, which gives the global slots.
    """

    def __init__(self, sampler: EpochSampler, batch_size: int, num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"ResumableKeySampler: batch_size must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.num_replicas, self.rank = num_replicas, rank
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

    def batches_in_epoch(self, epoch: int) -> int:
        """Batches of ``epoch``: the wrapped sampler's count when its epochs differ in length
        (``IdentitySampler.batches_in_epoch``), else its length over the batch size."""
        count = getattr(self.sampler, "batches_in_epoch", None)
        return int(count(epoch)) if callable(count) else len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[SampleKey]:
        indices = list(self.sampler)
        start = 0
        if self._resume is not None and self._resume.epoch == self.epoch:
            start = min(self._resume.batches_done * self.batch_size, len(indices))
        self._resume = None
        epoch, size, offset = self.epoch, self.batch_size, self.rank * self.batch_size
        step = size * self.num_replicas
        return (
            SampleKey(epoch, (slot // size) * step + offset + slot % size, indices[slot])
            for slot in range(start, len(indices))
        )


class ResumableDataLoader(DataLoader):
    """A training DataLoader whose passes start where the trainer stands.

    Args:
        dataset, **kwargs: as for :class:`~torch.utils.data.DataLoader`.
        sampler: a :class:`PositionedSampler` (:class:`ResumableKeySampler`, ``ResumableRandomSampler``).
        position: where training stands now (the datamodule passes ``train_position(trainer)``):
            batches the trainer consumed, not batches the workers prefetched; ``None`` without a
            trainer (the pass then covers the sampler's whole epoch).

    ``iter(loader)`` returns an iterator that creates the worker iterator on the first ``next()``,
    after telling the sampler to skip ``position().batches_done`` batches of its epoch.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        sampler: PositionedSampler,
        position: Callable[[], TrainPosition | None],
        **kwargs: Any,
    ) -> None:
        for method in ("set_epoch", "resume_from"):
            if not callable(getattr(sampler, method, None)):
                raise TypeError(f"ResumableDataLoader: the sampler {type(sampler).__name__} lacks {method}()")
        super().__init__(dataset, sampler=cast(Sampler[Any], sampler), **kwargs)
        self.positioned_sampler = sampler
        self.position = position
        self._restored: TrainPosition | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a lazy iterator, not DataLoader's own
        return _StartOnFirstBatch(self._start)

    def _start(self) -> Iterator[Any]:
        position = self.position()
        if position is not None:
            self._check_restored(position)
            self.positioned_sampler.resume_from(position)
        return super().__iter__()

    def _check_restored(self, position: TrainPosition) -> None:
        """The first pass after ``load_state_dict`` must start where the checkpoint says."""
        restored, self._restored = self._restored, None
        if restored is not None and restored != position:
            raise RuntimeError(
                f"ResumableDataLoader: the checkpoint's loader state is {restored} but the restored trainer "
                f"is at {position}; the checkpoint does not come from this configuration (batch size, "
                "dataset, world size) or from a consistent point of training"
            )

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches_done"}`` consumed so far; Lightning saves it with the fit loop."""
        position = self.position() or TrainPosition()
        return {"epoch": position.epoch, "batches_done": position.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Record the checkpoint's position; the next pass checks it against the restored trainer.

        The position itself is taken from the trainer when the pass starts, because Lightning calls
        this only when it builds the loader after restoring the loops, not when
        ``estimated_stepping_batches`` built it before. A state saved after a full epoch stands
        for the start of the next one.
        """
        missing = {"epoch", "batches_done"} - set(state)
        if missing:
            raise KeyError(
                f"ResumableDataLoader.load_state_dict: the checkpoint's loader state lacks "
                f"{sorted(missing)}: {state}"
            )
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        count = getattr(self.sampler, "batches_in_epoch", None)
        batches = int(count(epoch)) if callable(count) else len(self)
        self._restored = TrainPosition(epoch + 1, 0) if done >= batches else TrainPosition(epoch, done)


class _StartOnFirstBatch(Iterator[Any]):
    """Calls ``start()`` for the real iterator on the first ``next()``, then delegates to it."""

    def __init__(self, start: Callable[[], Iterator[Any]]) -> None:
        self._start: Callable[[], Iterator[Any]] | None = start
        self._iterator: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self._iterator is None:
            assert self._start is not None
            self._iterator, self._start = self._start(), None
        return next(self._iterator)


class ItemSeededDataset(Dataset):
    """``dataset[key.index]`` computed under a torch RNG seeded by ``item_seed(seed, epoch, slot)``, the
    slot a global one (:class:`ResumableKeySampler`): the same augmentation on any rank.

    The global RNG is restored afterwards (``torch.random.fork_rng``), so nothing else sees the
    reseeding. Random transforms must draw from torch's global generator (torchvision's do).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey) -> Any:
        if not isinstance(key, tuple) or len(key) != 3:
            raise TypeError(f"ItemSeededDataset: expected a SampleKey (epoch, slot, index), got {key!r}")
        epoch, slot, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, slot))
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
    "PositionedSampler",
    "ReseedEveryStep",
    "ResumableDataLoader",
    "ResumableKeySampler",
    "SampleKey",
    "TrainPosition",
    "item_seed",
    "train_position",
]
