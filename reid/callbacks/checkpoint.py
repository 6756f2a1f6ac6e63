"""``last.ckpt`` is the last state: a full file written at every epoch end, step checkpoint and preemption.

Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it also writes a top-k
file, so a validation that does not improve (or an epoch without validation) leaves ``last.ckpt`` at
an older step, and ``ckpt_path=last`` goes back in time. It also deletes the previous best before it
writes ``last.ckpt``; a kill in between leaves a ``last.ckpt`` whose callback state names a deleted
file. :class:`LastStateCheckpoint` keeps Lightning's top-k logic and adds:

* ``last.ckpt`` at the end of every training epoch (after that epoch's validation, so a resumed run
  starts after it and runs every later one), at every step checkpoint, and at the first step
  boundary after SIGTERM (``trainer.received_sigterm``, set by Lightning's signal connector);
* replaced files are removed only after ``last.ckpt`` names their successor;
* never a link (``save_last="link"`` is refused): every ``last.ckpt`` is a complete file, written
  atomically by :class:`~reid.training.checkpoint_io.AtomicCheckpointIO`;
* stale ``.tmp`` fragments of an interrupted write are removed from the folder at setup.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint

from reid.training.checkpoint_io import remove_stale_temporaries

log = logging.getLogger("reid")


class LastStateCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) whose ``last.ckpt`` is always the newest training state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("save_last", True) == "link":
            raise ValueError(
                "callbacks.model_checkpoint.save_last='link' is not supported: last.ckpt must be a full file "
                "(use save_last: true)"
            )
        kwargs.setdefault("save_last", True)
        super().__init__(*args, **kwargs)
        self._pending_removals: list[str] = []
        self._last_saved_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath and _is_local_file_protocol(self.dirpath):
            for name in remove_stale_temporaries(self.dirpath):
                log.info("removed %s/%s, left by an interrupted checkpoint write", self.dirpath, name)

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Deferred: the file goes once ``last.ckpt`` (or the hook's end, without save_last) replaces it."""
        self._pending_removals.append(filepath)

    def _flush_removals(self, trainer: L.Trainer) -> None:
        pending, self._pending_removals = self._pending_removals, []
        for filepath in pending:
            if filepath not in (self.best_model_path, self.last_model_path, *self.best_k_models):
                super()._remove_checkpoint(trainer, filepath)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_saved_step = trainer.global_step
        self._flush_removals(trainer)

    def _save_last_now(self, trainer: L.Trainer) -> None:
        if self.save_last and self._last_saved_step != trainer.global_step and not trainer.sanity_checking:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if trainer.received_sigterm:  # preemption: the state after this step, before Lightning stops
            self._save_last_now(trainer)
            log.warning("SIGTERM: wrote %s at step %d", self.last_model_path, trainer.global_step)
        self._flush_removals(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._flush_removals(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not trainer.fast_dev_run:
            self._save_last_now(trainer)
        self._flush_removals(trainer)


__all__ = ["LastStateCheckpoint"]
