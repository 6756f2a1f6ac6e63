"""One epoch count for the lines a run prints: `[train] epoch e/E`, `[val] epoch e`, `[test] epoch e`."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn


def epochs_completed(trainer: L.Trainer) -> int:
    """Training epochs finished when this is called.

    A validation inside ``fit`` runs at the end of epoch ``current_epoch`` (0-based), before Lightning
    counts that epoch as done, so it reports ``current_epoch + 1``; the ``[train] epoch e/E`` line of
    the same epoch says ``e`` too. Outside ``fit`` (``trainer.validate`` before training,
    ``trainer.test`` after it or from a checkpoint) it is the count of finished epochs the fit loop
    holds (restored from the checkpoint when one is loaded).
    """
    if trainer.state.fn == TrainerFn.FITTING:
        return trainer.current_epoch + 1
    return int(trainer.fit_loop.epoch_progress.current.completed)


__all__ = ["epochs_completed"]
