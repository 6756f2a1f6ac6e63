"""``last.ckpt`` is the last state: a full file written at every epoch end, step checkpoint and preemption.

Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it also writes a top-k
file, so a validation that does not improve (or an epoch without validation) leaves ``last.ckpt`` at
an older step, and ``ckpt_path=last`` goes back in time. It also deletes the previous best before it
writes ``last.ckpt``; a kill in between leaves a ``last.ckpt`` whose callback state names a deleted
file. :class:`LastStateCheckpoint` keeps Lightning's top-k logic and adds:

* ``last.ckpt`` at the end of every training epoch (after that epoch's validation, so a resumed run
  starts after it and runs every later one), at every step checkpoint (also before the monitored metric
  exists: Lightning defers those to the first validation), and at the first step boundary after SIGTERM
  (``trainer.received_sigterm``, set by Lightning's signal connector);
  :attr:`LastStateCheckpoint.last_saved_step` is the step it holds;
* a SIGTERM during a validation inside ``fit`` lets that validation finish (its scores are part of the
  epoch's record, and Lightning would not run it again on resume), then writes ``last.ckpt`` of the
  state after it and stops: nothing of the epoch is lost and the resumed run goes on from there;
* top-k files only of weights the last validation scored, so a file is labelled with the score of the
  weights it holds (Lightning would save one at a step checkpoint under an earlier validation's score);
  with step (or time) checkpoints, every validation still offers its weights to the top k;
* no ``last.ckpt`` at a step checkpoint that a validation follows (the epoch's last batch): the state
  after that validation is saved at the epoch's end, so a kill during the validation resumes before it
  and runs it again (Lightning would resume past it and skip it);
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
        self._last_saved: tuple[int, int] | None = None  # (global step, validation batches done)
        self._validated_step: int | None = None  # the step whose weights the last validation scored
        self._topk_step: int | None = None  # the step whose weights were last offered to the top k
        self._sigterm_deferred = False

    @property
    def last_saved_step(self) -> int | None:
        """The global step of the state ``last.ckpt`` holds (None before the first save)."""
        return None if self._last_saved is None else self._last_saved[0]

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

    def _flush_unless_last(self, trainer: L.Trainer) -> None:
        """At a hook's end: without ``last.ckpt`` nothing names a replaced file, so it goes now."""
        if not self.save_last:
            self._flush_removals(trainer)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_saved = (trainer.global_step, self._phase(trainer))
            self._flush_removals(trainer)

    @staticmethod
    def _phase(trainer: L.Trainer) -> int:
        """How many validation batches the state at this step has done: the state before a validation and
        the one after it hold the same step but are two states."""
        return int(trainer.fit_loop.epoch_loop.val_loop.batch_progress.total.completed)

    def _save_last_now(self, trainer: L.Trainer) -> None:
        """``last.ckpt`` of the current state unless it holds it already; Lightning's own bookkeeping (it
        skips its top-k save at a step it saved at) is left as if this save had not happened."""
        if not self.save_last or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if self._last_saved != (trainer.global_step, self._phase(trainer)):
            saved_step = self._last_global_step_saved
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = saved_step

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        """With a monitored metric, only for weights the last validation scored (module docstring)."""
        if self.monitor is None or self._validated_step == trainer.global_step:
            self._topk_step = trainer.global_step
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    @staticmethod
    def _validation_follows(trainer: L.Trainer) -> bool:
        """Whether the fit loop validates right after this training batch."""
        epoch_loop = trainer.fit_loop.epoch_loop
        fetcher = trainer.fit_loop._data_fetcher
        return (
            bool(trainer.num_val_batches) and fetcher is not None and epoch_loop._should_check_val_fx(fetcher)
        )

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_validation_batch_end(trainer, pl_module, *args)
        if trainer.state.fn == "fit" and trainer.received_sigterm:  # finish the validation first
            if not self._sigterm_deferred:
                log.warning("SIGTERM during a validation: finishing it, then stopping at the epoch's end")
            self._sigterm_deferred = True
            trainer._signal_connector.received_sigterm = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._validation_follows(trainer):  # no save of any kind: the state after it is saved
            return
        super().on_train_batch_end(trainer, pl_module, *args)
        every = self._every_n_train_steps
        if every >= 1 and trainer.global_step % every == 0:  # a step checkpoint, monitored metric or not
            self._save_last_now(trainer)
        if trainer.received_sigterm:  # preemption: the state after this step, before Lightning stops
            self._save_last_now(trainer)
            log.warning("SIGTERM: wrote %s at step %d", self.last_model_path, trainer.global_step)
        self._flush_unless_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_step = trainer.global_step
        super().on_validation_end(trainer, pl_module)
        if (
            not trainer.sanity_checking
            and trainer.state.fn == "fit"
            and self.monitor is not None
            and self._every_n_epochs < 1  # step or time checkpoints: Lightning offers no validation's weights
            and self._topk_step != trainer.global_step
            and self.monitor in (candidates := self._monitor_candidates(trainer))
        ):
            self._save_topk_checkpoint(trainer, candidates)
        if self._sigterm_deferred:  # the validation is done: Lightning now stops
            trainer._signal_connector.received_sigterm = True
            self._sigterm_deferred = False
        if trainer.state.fn == "fit" and not trainer.sanity_checking and trainer.received_sigterm:
            self._save_last_now(trainer)  # the state after the validation; Lightning raises right after it
            log.warning("SIGTERM: wrote %s at step %d", self.last_model_path, trainer.global_step)
        self._flush_unless_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not getattr(trainer, "fast_dev_run", False):  # set by the Trainer at run time
            self._save_last_now(trainer)
        self._flush_unless_last(trainer)


__all__ = ["LastStateCheckpoint"]
