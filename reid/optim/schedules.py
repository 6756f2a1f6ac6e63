"""Per-iteration schedules as plain arrays indexed by the global optimiser step (DINO's
``utils.cosine_scheduler``): self-supervised pretraining's lr, weight decay and teacher momentum.

The supervised and Cluster Contrast recipes change their lr once per epoch: ``reid.optim.epoch_schedules``.
"""

from __future__ import annotations

import numpy as np


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
