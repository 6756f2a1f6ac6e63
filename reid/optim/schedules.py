"""Learning-rate schedules as plain arrays indexed by the global optimiser step (DINO style).

A schedule is computed once from (base, final, epochs, steps per epoch, warmup) and applied by
:class:`ArrayLR`, which scales every parameter group's own initial lr, so group lr factors (e.g.
TransReID's bias lr x 2) survive the schedule.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _check_lengths(epochs: int, steps_per_epoch: int, warmup_epochs: float) -> None:
    if epochs <= 0 or steps_per_epoch <= 0:
        raise ValueError(
            f"schedule: epochs and steps_per_epoch must be positive, got epochs={epochs}, "
            f"steps_per_epoch={steps_per_epoch} (is trainer.max_epochs set?)"
        )
    if not 0 <= warmup_epochs <= epochs:
        raise ValueError(f"schedule: warmup_epochs={warmup_epochs} must lie in [0, epochs={epochs}]")


def cosine_schedule(
    base: float,
    final: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    warmup_start: float = 0.0,
) -> np.ndarray:
    """DINO's ``cosine_scheduler``: linear warmup then a per-step half cosine.

    With W warmup steps and T total steps::

        v[i] = warmup_start + (base - warmup_start) * i / (W - 1)             for i < W
        v[i] = final + 0.5 * (base - final) * (1 + cos(pi * (i - W) / (T - W)))  for i >= W

    Returns a float64 array of length ``epochs * steps_per_epoch``.
    """
    _check_lengths(epochs, steps_per_epoch, warmup_epochs)
    total = epochs * steps_per_epoch
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    warmup = np.linspace(warmup_start, base, warmup_steps) if warmup_steps > 0 else np.zeros(0)
    iters = np.arange(total - warmup_steps)
    decay = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
    return np.concatenate([warmup, decay])


def transreid_schedule(
    base: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 5,
    warmup_start_factor: float = 0.01,
    final_factor: float = 0.002,
) -> np.ndarray:
    """TransReID's warmup + cosine (``solver/cosine_lr.py`` with ``scheduler_factory.py`` "type 2").

    The lr is constant within an epoch. For 1-based epoch t of T, with ``init = 0.01 * base`` and
    ``lr_min = 0.002 * base``::

        lr(t) = init + t * (base - init) / warmup_epochs                 for t < warmup_epochs
        lr(t) = lr_min + 0.5 * (base - lr_min) * (1 + cos(pi * t / T))   otherwise

    (the cosine runs over the absolute epoch, warmup included, as in the official code; the
    last epoch sits at ``lr_min``). Returns an array of length ``epochs * steps_per_epoch``.

    The official scheduler sets the same absolute ``init``/``lr_min`` on every parameter group;
    :class:`ArrayLR` instead scales them by each group's lr factor (bias groups start at
    ``2 * init``), a difference confined to the bias lr during warmup and the final epochs.
    """
    _check_lengths(epochs, steps_per_epoch, warmup_epochs)
    init, lr_min = warmup_start_factor * base, final_factor * base
    per_epoch = []
    for t in range(1, epochs + 1):
        if t < warmup_epochs:
            per_epoch.append(init + t * (base - init) / warmup_epochs)
        else:
            per_epoch.append(lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * t / epochs)))
    return np.repeat(np.asarray(per_epoch, dtype=np.float64), steps_per_epoch)


def warmup_multistep_schedule(
    base: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 10,
    warmup_start_factor: float = 0.1,
    milestones: Sequence[int] = (40, 70),
    gamma: float = 0.1,
) -> np.ndarray:
    """BoT's warmup + step decay (Luo et al., CVPRW 2019, "warmup learning rate"; official
    ``solver/lr_scheduler.py`` ``WarmupMultiStepLR``, stepped once per epoch).

    The lr is constant within an epoch. For 0-based epoch e, with ``a = e / warmup_epochs``::

        lr(e) = base * w(e) * gamma ** #{m in milestones : m <= e}
        w(e)  = warmup_start_factor * (1 - a) + a     for e < warmup_epochs,  1 otherwise

    BoT: base 3.5e-4, 10 warmup epochs rising linearly from 0.1 x base (the paper: 3.5e-5 -> 3.5e-4),
    x0.1 at epochs 40 and 70, 120 epochs (the released ``softmax_triplet.yml`` starts lower, with
    ``WARMUP_FACTOR: 0.01``). Returns an array of length ``epochs * steps_per_epoch``.
    """
    _check_lengths(epochs, steps_per_epoch, warmup_epochs)
    steps = [int(m) for m in milestones]
    if steps != sorted(steps) or any(m <= 0 for m in steps):
        raise ValueError(f"schedule: milestones must be increasing positive epochs, got {steps}")
    per_epoch = []
    for e in range(epochs):
        alpha = e / warmup_epochs if e < warmup_epochs else 1.0
        warm = warmup_start_factor * (1 - alpha) + alpha
        per_epoch.append(base * warm * gamma ** bisect.bisect_right(steps, e))
    return np.repeat(np.asarray(per_epoch, dtype=np.float64), steps_per_epoch)


class ArrayLR(LambdaLR):
    """Apply a precomputed lr array per optimiser step, keeping each group's lr factor.

    Group ``g`` gets ``initial_lr_g * values[step] / base_lr``; a group built with
    ``lr = base_lr * factor`` therefore follows ``factor * values[step]``. Steps past the end of
    the array keep its last value. Call ``step()`` once per optimiser step (Lightning
    ``interval: step``).
    """

    def __init__(self, optimizer: Optimizer, values: np.ndarray, base_lr: float, last_epoch: int = -1):
        if base_lr <= 0:
            raise ValueError(f"ArrayLR: base_lr must be positive, got {base_lr}")
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1 or len(values) == 0:
            raise ValueError(f"ArrayLR: values must be a non-empty 1-D array, got shape {values.shape}")
        self.values = values
        self.base_lr = base_lr
        super().__init__(optimizer, self._multiplier, last_epoch=last_epoch)

    def _multiplier(self, step: int) -> float:
        return float(self.values[min(step, len(self.values) - 1)]) / self.base_lr

    def state_dict(self) -> dict:
        """The scheduler position without ``values``: the array is rebuilt from the config, and a
        checkpoint free of numpy objects loads with ``torch.load(weights_only=True)``."""
        state = super().state_dict()
        state.pop("values", None)
        return state


def per_step_scheduler(
    optimizer: Optimizer,
    schedule_factory: Callable[..., Sequence[float]],
    base_lr: float,
    max_epochs: int | None,
    stepping_batches: int | float,
    owner: str,
) -> dict[str, Any]:
    """What a LightningModule's ``configure_optimizers`` returns for ``optimizer`` under a per-step lr
    array: ``schedule_factory(base, epochs, steps_per_epoch)`` sized by the trainer's ``max_epochs`` and
    its ``estimated_stepping_batches``, wrapped in :class:`ArrayLR` and stepped every batch. ``owner``
    names the task in the error for a missing epoch count.
    """
    if max_epochs is None or max_epochs <= 0:
        raise ValueError(
            f"{owner}: the lr schedule is sized by trainer.max_epochs, got {max_epochs}; "
            "set trainer.max_epochs or model.schedule=null"
        )
    steps_per_epoch = max(1, math.ceil(stepping_batches / max_epochs))
    values = schedule_factory(base=base_lr, epochs=max_epochs, steps_per_epoch=steps_per_epoch)
    scheduler = ArrayLR(optimizer, values, base_lr=base_lr)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
