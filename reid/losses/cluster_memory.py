"""The cluster-level contrastive loss of Cluster Contrast and its momentum-updated memory.

Cluster Contrast (Dai et al., "Cluster Contrast for Unsupervised Person Re-Identification", 2021,
Sec. 3.2, Eq. 2-4). The memory holds one L2-normalised feature ``c_k`` per cluster (initialised from
the cluster centroids every epoch). For a query feature ``q`` (L2-normalised) of pseudo label ``y``:

    L_q = -log( exp(q . c_y / tau) / sum_{k=0}^{K-1} exp(q . c_k / tau) )        (ClusterNCE, Eq. 2)

averaged over the batch, with temperature ``tau`` (official 0.05). The gradient flows into ``q`` only;
the memory is then updated with the batch (official ``clustercontrast/models/cm.py``, which does it in
the backward of an autograd function, after the input gradient was formed from the old memory):

* ``update="hard"`` (``CM_Hard``, ``--use-hard``, Eq. 4): for each cluster in the batch, its hardest
  instance, the one of least similarity ``q . c_y`` to the memory entry (first on ties, ``np.argmin``),
  gives ``c_y <- m c_y + (1 - m) q_hard``, then ``c_y <- c_y / ||c_y||``; each cluster once.
* ``update="all"`` (``CM``, Eq. 3): every instance in batch order, ``c_y <- m c_y + (1 - m) q``,
  ``c_y <- c_y / ||c_y||``, one after the other (a cluster with several instances is updated several
  times; this is the official code's "mean" update, not an average of the batch's features).

``m`` is the momentum (``--momentum``: 0.2 in the TransReID-SSL and PASS scripts, 0.1 in the paper's
ResNet runs). The memory is replaced by a new tensor, never written in place, so the graph of the loss
keeps the memory it was computed with. Under DDP the update sees every rank's batch (all-gather), as the
official single-process ``DataParallel`` update sees the whole batch. Shapes: features ``[B, D]``, labels
``[B]`` in ``[0, K)``; memory ``[K, D]``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid.distributed import gather

MemoryUpdate = Literal["hard", "all"]


class ClusterMemory(nn.Module):
    """ClusterNCE over a memory of cluster features (module docstring). Call :meth:`reset` with the
    epoch's centroids before training on its pseudo labels; ``forward`` updates the memory in training
    mode only."""

    features: Tensor  # buffer [K, D], L2-normalised

    def __init__(
        self, temperature: float = 0.05, momentum: float = 0.2, update: MemoryUpdate = "hard"
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"model.memory.temperature={temperature!r}: expected a positive number")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"model.memory.momentum={momentum!r}: expected a value in [0, 1)")
        if update not in ("hard", "all"):
            raise ValueError(f"model.memory.update={update!r}: expected 'hard' (--use-hard) or 'all'")
        self.temperature, self.momentum, self.update = float(temperature), float(momentum), update
        self.register_buffer("features", torch.zeros(0, 0), persistent=False)

    @property
    def num_clusters(self) -> int:
        return self.features.shape[0]

    def reset(self, centroids: Tensor) -> None:
        """Memory <- the L2-normalised ``centroids`` ``[K, D]`` (official ``F.normalize(centroids)``)."""
        if centroids.ndim != 2 or centroids.shape[0] < 1:
            raise ValueError(
                f"ClusterMemory.reset: expected centroids [K >= 1, D], got {tuple(centroids.shape)}"
            )
        self.features = F.normalize(centroids.detach().float(), dim=1).to(self.features.device)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        if self.num_clusters == 0:
            raise RuntimeError("ClusterMemory: the memory is empty; call reset(centroids) first")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_clusters):
            raise ValueError(
                f"ClusterMemory: labels must lie in [0, {self.num_clusters}), got "
                f"[{int(labels.min())}, {int(labels.max())}] (outliers must be left out of the batch)"
            )
        queries = F.normalize(features.float(), dim=1)
        logits = queries @ self.features.t() / self.temperature
        loss = F.cross_entropy(logits, labels)
        if self.training:
            self.features = self.updated(gather(queries.detach()), gather(labels))
        return loss

    @torch.no_grad()
    def updated(self, queries: Tensor, labels: Tensor) -> Tensor:
        """The memory after the momentum update with the unit ``queries`` of ``labels`` (a new tensor)."""
        memory, m = self.features.clone(), self.momentum
        if self.update == "all":
            for query, label in zip(queries, labels.tolist(), strict=True):
                entry = m * memory[label] + (1.0 - m) * query
                memory[label] = entry / entry.norm()
            return memory
        for label in dict.fromkeys(labels.tolist()):  # clusters in order of first appearance
            members = queries[labels == label]
            hardest = members[torch.argmin(members @ memory[label])]
            entry = m * memory[label] + (1.0 - m) * hardest
            memory[label] = entry / entry.norm()
        return memory
