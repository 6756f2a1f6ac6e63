"""Plain-text training progress lines, for logs that are files (SLURM, nohup, ``make demo > log``).

A rich progress bar draws nothing useful when stdout is not a terminal, so a run redirected to a file
is silent between validations. :class:`ProgressLog` prints one line at the end of every epoch and,
when stdout is not a terminal, one every ``every_n_steps`` training steps (fast-reid's
``CommonMetricPrinter`` does the same)::

    [train] epoch 3/10 step 135/450 (45/45) loss 2.314 loss_id 1.602 lr 9.1e-04 | 41.3 img/s | ETA 3m12s

Epochs are numbered from 1 and count finished epochs, as the ``[val]`` / ``[test]`` lines of the tasks
do (``reid.training.epochs.epochs_completed``): ``[val] epoch 5`` follows ``[train] epoch 5/10``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from reid.data.resumable import batches_processed


def format_duration(seconds: float) -> str:
    """``3725`` -> ``'1h02m05s'``; ``72`` -> ``'1m12s'``; ``5.4`` -> ``'5s'``; not finite -> ``'?'``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _scalar(value: Any) -> float | None:
    if isinstance(value, Tensor):
        return float(value.detach().float().item()) if value.numel() == 1 else None
    return float(value) if isinstance(value, int | float) else None


def format_metrics(metrics: Mapping[str, Any], prefix: str = "train/") -> str:
    """``train/loss``-style scalars as ``loss 2.314 lr 1.0e-03`` (``lr`` in scientific notation)."""
    parts = []
    for name in sorted(metrics, key=lambda key: (key != f"{prefix}loss", key)):
        value = _scalar(metrics[name])
        if not name.startswith(prefix) or value is None:
            continue
        short = name.removeprefix(prefix)
        parts.append(f"{short} {value:.1e}" if short.startswith("lr") else f"{short} {value:.4g}")
    return " ".join(parts)


class ProgressLog(L.Callback):
    """Print ``[train]`` progress lines: every epoch, and every ``every_n_steps`` steps off a terminal.

    Args:
        every_n_steps: step interval of the lines when stdout is not a terminal (0: epoch lines only).
        step_lines: ``"auto"`` (only when stdout is not a terminal), ``"always"`` or ``"never"``.
        stream: where to write (stdout by default; tests pass a buffer).
    """

    def __init__(
        self, every_n_steps: int = 50, step_lines: str = "auto", stream: TextIO | None = None
    ) -> None:
        if every_n_steps < 0:
            raise ValueError(f"ProgressLog: every_n_steps must be >= 0, got {every_n_steps}")
        if step_lines not in ("auto", "always", "never"):
            raise ValueError(
                f"ProgressLog: step_lines must be 'auto', 'always' or 'never', got {step_lines!r}"
            )
        self.every_n_steps = every_n_steps
        self.step_lines = step_lines
        self.stream = stream
        self.clock: Callable[[], float] = time.perf_counter
        self._fit_start = self._epoch_start = 0.0
        self._images = 0
        self._steps_this_run = 0
        self._last_epoch_line = -1

    def _out(self) -> TextIO:
        return self.stream or sys.stdout

    def _want_step_lines(self) -> bool:
        if self.step_lines == "auto":
            isatty = getattr(self._out(), "isatty", None)
            return not (callable(isatty) and isatty())
        return self.step_lines == "always"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = self.clock()
        self._steps_this_run = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self.clock()
        self._images = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += _batch_size(batch)
        self._steps_this_run += 1
        if self.every_n_steps and self._want_step_lines() and (batch_idx + 1) % self.every_n_steps == 0:
            self._print_line(trainer, batch_idx + 1)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning validates at the end of an epoch before its on_train_epoch_end: print the epoch's
        # line first, so that "[train] epoch 5/10" comes before "[val] epoch 5"
        done = batches_processed(trainer)
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if fitting and done and done == _batches_per_epoch(trainer):
            self._end_epoch(trainer, done)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_epoch(trainer, batches_processed(trainer))

    def _end_epoch(self, trainer: L.Trainer, done: int) -> None:
        if self._last_epoch_line != trainer.current_epoch:
            self._last_epoch_line = trainer.current_epoch
            self._print_line(trainer, done, epoch_end=True)

    @rank_zero_only
    def _print_line(self, trainer: L.Trainer, batch_in_epoch: int, epoch_end: bool = False) -> None:
        now = self.clock()
        per_epoch = _batches_per_epoch(trainer)
        epoch = trainer.current_epoch + 1
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        total = per_epoch * max_epochs if per_epoch and max_epochs else None
        step = trainer.global_step
        elapsed_run = now - self._fit_start
        per_step = elapsed_run / self._steps_this_run if self._steps_this_run else math.nan
        remaining = (total - step) * per_step if total else math.nan
        epochs = f"{epoch}/{max_epochs}" if max_epochs else f"{epoch}"
        steps = f"{step}/{total}" if total else f"{step}"
        within = f" ({batch_in_epoch}/{per_epoch})" if per_epoch else ""
        rate = self._images / max(now - self._epoch_start, 1e-9)
        metrics = format_metrics(trainer.callback_metrics)
        tail = f" | epoch {format_duration(now - self._epoch_start)}" if epoch_end else ""
        line = (
            f"[train] epoch {epochs} step {steps}{within} {metrics} | {rate:.1f} img/s | "
            f"ETA {format_duration(remaining)}{tail}"
        )
        print(line, file=self._out(), flush=True)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Mapping):
        batch = next(iter(batch.values()), None)
    elif isinstance(batch, list | tuple) and batch:
        batch = batch[0]
    if isinstance(batch, list | tuple) and batch:  # multi-crop: a list of crop batches
        batch = batch[0]
    return int(batch.shape[0]) if isinstance(batch, Tensor) and batch.ndim else 0


def _batches_per_epoch(trainer: L.Trainer) -> int | None:
    count = trainer.num_training_batches
    return int(count) if isinstance(count, int | float) and math.isfinite(count) else None


__all__ = ["ProgressLog", "format_duration", "format_metrics"]
