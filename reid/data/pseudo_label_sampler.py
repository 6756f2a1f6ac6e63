"""P x K sampling over pseudo labels, as Cluster Contrast's ``RandomMultipleGallerySampler``.

Official ``clustercontrast/utils/data/sampler.py`` (alibaba/cluster-contrast-reid, unchanged in
damo-cv/TransReID-SSL): one pass visits every cluster once, in random order; for each it takes a random
anchor image, then ``K - 1`` more of the same cluster, drawn from its images of *other cameras* than the
anchor's (without replacement when at least ``K`` such images exist, else with replacement), or, when the
cluster was seen by one camera only, from its other images (same rule); a single-image cluster gives its
anchor alone. The pass is cut into batches of ``P x K`` (``drop_last``: the tail is dropped) and
``IterLoader`` starts a new pass when one is used up, for a fixed number of iterations per epoch
(``--iters 200``). Outliers (label -1) are never sampled. A pass shorter than one batch (fewer than P
clusters) yields no batch there, so the official loader stops; here such passes are joined until they
fill one (a warning says so), which changes nothing when every pass fills a batch.

Here the stream of one epoch is a function of ``(seed, epoch)`` and of the pseudo labels read when the
epoch starts (after the task clustered), which is what :class:`~reid.data.resumable.ResumableKeySampler`
needs for an exact mid-epoch resume. Under DDP a global batch is ``P x K x world_size`` items of the
single-process stream and rank ``r`` takes its ``r``-th slice, so every step still holds each cluster once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from reid.data.samplers import check_pk_batch

log = logging.getLogger("reid")


class PseudoLabelSampler(Sampler[int]):
    """Yields training-set indices; call :meth:`set_epoch` before each epoch.

    Args:
        pseudo_labels: returns the current labels, one per training image (-1 = outlier), or ``None``
            when no clustering ran yet (an error when the epoch starts).
        camids: camera of every training image.
        batch_size: the global P x K batch (``-b``), split over the ranks; num_instances: K; iterations:
            batches per epoch (``--iters``).
    """

    def __init__(
        self,
        pseudo_labels: Callable[[], np.ndarray | None],
        camids: Sequence[int],
        batch_size: int,
        num_instances: int,
        iterations: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        check_pk_batch(batch_size, num_instances, num_replicas, rank, key_prefix="data.")
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(
                f"data.iterations={iterations!r}: expected a positive integer (batches per epoch)"
            )
        self.pseudo_labels, self.camids = pseudo_labels, np.asarray(camids, dtype=np.int64)
        self.batch_size, self.num_instances, self.iterations = batch_size, num_instances, iterations
        self.seed, self.num_replicas, self.rank, self.epoch = seed, num_replicas, rank, 0
        self._warned = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.iterations * (self.batch_size // self.num_replicas)

    def _labels(self) -> np.ndarray:
        labels = self.pseudo_labels()
        if labels is None:
            raise RuntimeError(
                "PseudoLabelSampler: no pseudo labels yet; the unlabelled data (data=usl_*) trains with the "
                "Cluster Contrast task (model=cluster_contrast), which clusters at each epoch start"
            )
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != self.camids.shape:
            raise ValueError(f"PseudoLabelSampler: {labels.size} pseudo labels for {self.camids.size} images")
        return labels

    def _draw(self, rng: np.random.Generator, choices: np.ndarray) -> np.ndarray:
        """``K - 1`` of ``choices``: distinct when there are at least K of them (the official rule)."""
        return rng.choice(choices, size=self.num_instances - 1, replace=len(choices) < self.num_instances)

    def _pass(self, rng: np.random.Generator, members: list[np.ndarray]) -> list[int]:
        """One visit of every cluster (module docstring)."""
        out: list[int] = []
        for cluster in rng.permutation(len(members)):
            images = members[cluster]
            anchor = int(rng.choice(images))
            out.append(anchor)
            others = images[self.camids[images] != self.camids[anchor]]
            if not others.size:
                others = images[images != anchor]
            if others.size:
                out.extend(int(i) for i in self._draw(rng, others))
        return out

    def _warn_short_pass(self, clusters: int, items: int, step: int) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "%d clusters give %d images a pass, fewer than one batch of %d: passes are joined until they "
                "fill one, so a batch repeats clusters (the official loader would stop); lower "
                "data.batch_size or revise model.clustering",
                clusters, items, step,
            )  # fmt: skip

    def __iter__(self) -> Iterator[int]:
        labels = self._labels()
        clustered = np.flatnonzero(labels >= 0)
        order = np.argsort(labels[clustered], kind="stable")
        members = np.split(clustered[order], np.flatnonzero(np.diff(labels[clustered][order])) + 1)
        members = [m for m in members if m.size]
        step, share = self.batch_size, self.batch_size // self.num_replicas  # global batch, this rank's
        rng = np.random.default_rng([self.seed, self.epoch])
        stream: list[int] = []
        pending: list[int] = []
        while len(stream) < self.iterations * step:
            pending += self._pass(rng, members)
            if len(pending) < step:
                self._warn_short_pass(len(members), len(pending), step)
                continue
            stream += pending[: len(pending) - len(pending) % step]
            pending = []
        stream = stream[: self.iterations * step]
        start = self.rank * share
        for first in range(0, len(stream), step):
            yield from stream[first + start : first + start + share]
