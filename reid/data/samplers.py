"""P x K identity sampling (Hermans et al. 2017, "In Defense of the Triplet Loss"), correct under DDP.

Every batch holds P identities with K images each, which is what batch-hard triplet mining needs.
The epoch is planned once, globally, from ``(seed, epoch)`` as the official ``RandomIdentitySampler``
(TransReID, TransReID-SSL, PASS and BoT ``datasets/sampler.py``) plans it: each identity's images are
shuffled and cut into chunks of K (identities with fewer than K images are sampled with replacement up
to K; a final partial chunk is dropped); then, while at least ``P x world_size`` identities have unused
chunks, that many distinct identities are drawn uniformly and each gives its next chunk. The epoch ends
there, so its number of batches depends on the draws (below the count of chunks / P the official
``__len__`` estimates) and differs from epoch to epoch; :meth:`IdentitySampler.batches_in_epoch` gives
it for any epoch, and the datamodule's loader is rebuilt every epoch
(``trainer.reload_dataloaders_every_n_epochs: 1``) so that Lightning trains each epoch's own length.
``batch_size`` is the recipe's global batch, whatever the number of processes: with ``W`` processes
rank ``r`` takes identities ``[r*P/W, (r+1)*P/W)`` of every global batch of ``P`` identities (``P`` must
divide by ``W``), so in every step the ranks see disjoint identities, all ranks run the same number of
steps, and the union over ranks of a step is exactly the one-process batch of the same seed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

log = logging.getLogger("reid")
_REPORTED: set[tuple[int, int, int]] = set()
"""(identities, short identities, K) already logged: a sampler rebuilt every epoch logs once."""


def check_pk_batch(
    batch_size: int, num_instances: int, num_replicas: int, rank: int, key_prefix: str = ""
) -> None:
    """A global P x K batch needs ``batch_size`` a positive multiple of K (``num_instances``) whose P
    identities split evenly over the ``num_replicas`` processes, and a rank inside the world; the error
    names the keys with ``key_prefix`` (``"data."`` for the config's)."""
    if num_instances < 1 or batch_size < num_instances or batch_size % num_instances != 0:
        raise ValueError(
            f"{key_prefix}batch_size ({batch_size}) must be a positive multiple of {key_prefix}num_instances "
            f"({num_instances})"
        )
    identities = batch_size // num_instances
    if identities % num_replicas != 0:
        fitting = num_instances * num_replicas * max(1, identities // num_replicas)
        raise ValueError(
            f"{key_prefix}batch_size={batch_size} is the global batch of {identities} identities x "
            f"K={num_instances}, and {num_replicas} processes cannot each take whole identities of it: use a "
            f"number of identities that divides by {num_replicas} (e.g. {key_prefix}batch_size={fitting})"
        )
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside [0, num_replicas={num_replicas})")


class IdentitySampler(Sampler[int]):
    """Yields dataset indices for P x K batches; call :meth:`set_epoch` before each epoch.

    Args:
        pids: identity of every item of the dataset, in dataset order.
        batch_size: images of a global batch (P x K), split over the ranks.
        num_instances: K, images per identity in a batch.
        seed: the epoch plan depends only on ``seed`` and the epoch.
        num_replicas: world size (1 without DDP).
        rank: this process' rank.
    """

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        check_pk_batch(batch_size, num_instances, num_replicas, rank)
        self.num_instances = num_instances
        self.ids_per_batch = batch_size // num_instances  # P of the global batch
        self.ids_per_rank = self.ids_per_batch // num_replicas
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._index_by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            self._index_by_pid[int(pid)].append(index)
        if len(self._index_by_pid) < self.ids_per_batch:
            raise ValueError(
                f"a batch needs {self.ids_per_batch} distinct identities but the training set has only "
                f"{len(self._index_by_pid)}; lower data.batch_size or raise data.num_instances"
            )
        self._report_short_identities()
        self._batches: dict[int, list[list[list[int]]]] = {}
        """The global batches of the epoch planned last (a plan is a pure function of the epoch)."""

    def _report_short_identities(self) -> None:
        """Log once how many identities have fewer than K images (they are sampled with replacement)."""
        short = sum(len(v) < self.num_instances for v in self._index_by_pid.values())
        key = (len(self._index_by_pid), short, self.num_instances)
        if short and key not in _REPORTED:
            _REPORTED.add(key)
            log.warning(
                "%d of %d training identities have fewer than num_instances (K=%d) images: they are sampled "
                "with replacement (repeated images in their batches); lower data.num_instances to avoid it",
                short, len(self._index_by_pid), self.num_instances,
            )  # fmt: skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches_in_epoch(self, epoch: int) -> int:
        """Batches (steps) of ``epoch``: the official ``RandomIdentitySampler``'s count for its draws."""
        return len(self._plan(epoch))

    def _chunks(self, rng: np.random.Generator) -> dict[int, list[list[int]]]:
        """Each identity's images, shuffled and cut into chunks of K."""
        chunks: dict[int, list[list[int]]] = {}
        for pid in sorted(self._index_by_pid):
            indices = np.asarray(self._index_by_pid[pid])
            if len(indices) < self.num_instances:
                indices = rng.choice(indices, size=self.num_instances, replace=True)
            indices = rng.permutation(indices)
            usable = len(indices) - len(indices) % self.num_instances
            chunks[pid] = [c.tolist() for c in np.split(indices[:usable], usable // self.num_instances)]
        return chunks

    def _plan(self, epoch: int) -> list[list[list[int]]]:
        """Global batches of ``epoch``: a list of batches, each a list of K-index chunks (module
        docstring); cached, since the loader asks for its length before it iterates."""
        if epoch not in self._batches:
            self._batches = {epoch: self._draw(np.random.default_rng([self.seed, epoch]))}
        return self._batches[epoch]

    def _draw(self, rng: np.random.Generator) -> list[list[list[int]]]:
        chunks = self._chunks(rng)
        batch_ids = self.ids_per_batch
        available = [pid for pid in sorted(chunks) if chunks[pid]]
        batches: list[list[list[int]]] = []
        while len(available) >= batch_ids:
            chosen = [available[i] for i in rng.choice(len(available), size=batch_ids, replace=False)]
            batches.append([chunks[pid].pop(0) for pid in chosen])
            if any(not chunks[pid] for pid in chosen):
                available = [pid for pid in available if chunks[pid]]
        return batches

    def __iter__(self) -> Iterator[int]:
        start = self.rank * self.ids_per_rank
        for batch in self._plan(self.epoch):
            for chunk in batch[start : start + self.ids_per_rank]:
                yield from chunk

    def __len__(self) -> int:
        """Indices this rank yields in the current epoch."""
        return len(self._plan(self.epoch)) * self.ids_per_rank * self.num_instances
