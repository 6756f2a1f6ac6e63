"""Does the RPE-triplet loss carry identity information where it matters: on images never trained on?

At every validation and test of a run whose objective has an ``rpe_triplet`` term, the relation vectors
(``RPETripletTerm.relations``, compared as the loss compares a batch: ``bound``) are computed for up to
``max_images`` query images of
the first evaluation target (queries: every image a real identity, one per camera), and two numbers are
logged (``val/rpe/*``, ``test/rpe/*``):

* ``auc``: the probability that two images of one identity have closer relation vectors than two images
  of different identities (0.5: the vectors say nothing about identity);
* ``collapse``: the mean cosine between different images' compared relation vectors (1: all alike), and
  ``raw_collapse`` on the raw ones (before the soft form's batch centring).

The training batches report the same two on every step (``train/rpe_triplet/auc``, ``.../collapse``).
"""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
from torch import Tensor

from reid.losses.rpe_triplet import RPETripletTerm, identity_auc, mean_cross_cosine
from reid.models.reid_net import ReIDNet


def rpe_term(pl_module: L.LightningModule) -> Any:
    """The module's RPE-triplet term, or None."""
    terms = getattr(getattr(pl_module, "objective", None), "terms", {})
    return next((term for term in terms.values() if isinstance(term, RPETripletTerm)), None)


class RPEMonitor(L.Callback):
    """Logs ``<stage>/rpe/auc`` and ``<stage>/rpe/collapse`` on evaluation queries (module docstring)."""

    def __init__(self, max_images: int = 1024) -> None:
        if max_images < 4:
            raise ValueError(f"callbacks.rpe_monitor.max_images={max_images}: expected at least 4")
        self.max_images = max_images
        self._features: list[Tensor] = []
        self._labels: list[Tensor] = []

    def _start(self) -> None:
        self._features, self._labels = [], []

    def _collect(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, dataloader_idx: int
    ) -> None:
        term = rpe_term(pl_module)
        num_query = getattr(getattr(trainer, "datamodule", None), "num_query", 0)  # attached at run time
        seen = sum(len(f) for f in self._features)
        if term is None or dataloader_idx != 0 or seen >= self.max_images:
            return
        queries = batch["index"] < num_query
        if not bool(queries.any()):
            return
        images = batch["image"][queries][: self.max_images - seen]
        cams, views = batch["camid"][queries][: len(images)], batch["viewid"][queries][: len(images)]
        with torch.no_grad():
            aux = cast(ReIDNet, pl_module.net).positional_inputs(
                images, cams if pl_module.sie_at_test else None, views if pl_module.sie_at_test else None
            )
            self._features.append(term.relations(aux).float().cpu())
        self._labels.append(batch["pid"][queries][: len(images)].cpu())

    def _finish(self, pl_module: L.LightningModule, stage: str) -> None:
        if not self._features:
            return
        raw, labels = torch.cat(self._features), torch.cat(self._labels)
        compared = rpe_term(pl_module).bound(raw)  # centred over the queries as over a batch (soft form)
        auc = identity_auc(compared, labels)
        if torch.isfinite(auc):
            pl_module.log(f"{stage}/rpe/auc", auc, sync_dist=False)
        pl_module.log(f"{stage}/rpe/collapse", mean_cross_cosine(compared), sync_dist=False)
        pl_module.log(f"{stage}/rpe/raw_collapse", mean_cross_cosine(raw), sync_dist=False)
        self._start()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect(trainer, pl_module, batch, dataloader_idx)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(pl_module, "val")

    on_test_epoch_start = on_validation_epoch_start
    on_test_batch_end = on_validation_batch_end

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(pl_module, "test")
