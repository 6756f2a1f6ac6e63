"""Learning-rate schedules that change once per epoch, each equal to one official scheduler as its
official training loop drives it.

A schedule gives the lr of one parameter group for a (0-based) training epoch::

    lr = schedule(epoch, peak=group's own lr, base=the recipe's base lr, epochs=training length)

``peak`` is the group's lr before scheduling (``base * lr_factor``: TransReID's biases have
``BIAS_LR_FACTOR`` 2); ``base`` is ``SOLVER.BASE_LR``, from which some schedulers take absolute values
shared by every group (timm's warm-up start and floor). :func:`set_epoch_lr` applies a schedule to
every group of an optimiser; the tasks call it at the start of each epoch, so the lr is a pure
function of the epoch (nothing to save, exact after any resume, and right whatever the number of
batches an epoch has).

When the official loop calls ``scheduler.step`` matters as much as the formula: a scheduler stepped at
the start of epoch ``e`` (1-based) trains that epoch at its value for ``t = e``; one stepped at the end
trains it at ``t = e - 1``. ``steps_at`` says which; with 0-based ``epoch``::

    t = epoch + 1   (steps_at="epoch_start": TransReID processor.py, BoT engine/trainer.py)
    t = epoch       (steps_at="epoch_end": TransReID-SSL and PASS processor.py, Cluster Contrast)

A schedule with ``per_step=True`` (not an official recipe's: the CPU demo's) is evaluated at every step at
the fractional epoch ``epoch + batch / batches_in_epoch``, so its warm-up and decay are smooth within
epochs, as timm's ``t_in_epochs=False`` schedulers are.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from torch.optim import Optimizer

StepsAt = Literal["epoch_start", "epoch_end"]


class EpochSchedule(Protocol):
    def __call__(self, epoch: float, peak: float, base: float, epochs: int) -> float: ...


def _scheduler_time(epoch: float, steps_at: str) -> float:
    """The official scheduler's ``t`` while 0-based ``epoch`` trains (module docstring)."""
    if steps_at not in ("epoch_start", "epoch_end"):
        raise ValueError(f"schedule: steps_at={steps_at!r}; expected 'epoch_start' or 'epoch_end'")
    if epoch < 0:
        raise ValueError(f"schedule: epoch must be >= 0, got {epoch}")
    return epoch + 1 if steps_at == "epoch_start" else epoch


@dataclass(frozen=True)
class TimmCosineLR:
    """timm's ``CosineLRScheduler`` as TransReID's ``solver/scheduler_factory.py`` builds it ("type 2":
    ``t_initial`` = epochs, ``lr_min`` = 0.002 x base, ``warmup_lr_init`` = 0.01 x base, ``cycle_limit``
    1, ``t_in_epochs``); TransReID-SSL and PASS build the same one. For group peak ``p``, with the
    absolute ``init = warmup_start_factor * base`` and ``floor = final_factor * base`` shared by every
    group, W warm-up epochs and T epochs::

        lr(t) = init + t * (p - init) / W                          t < W
        lr(t) = floor + (p - floor) * (1 + cos(pi * t / T)) / 2    W <= t < T
        lr(t) = floor                                              t >= T

    so a bias group (p = 2 x base) starts and ends where every other group does; only its peak is
    twice as high. TransReID steps at the start of each epoch (``steps_at="epoch_start"``, its epoch 1
    already at t = 1); TransReID-SSL and PASS step at the end (``"epoch_end"``: epoch 1 at t = 0, i.e.
    ``init`` for every group). ``per_step``: evaluated at every step (module docstring).
    """

    warmup_epochs: int = 5
    warmup_start_factor: float = 0.01
    final_factor: float = 0.002
    steps_at: StepsAt = "epoch_start"
    per_step: bool = False

    def __call__(self, epoch: float, peak: float, base: float, epochs: int) -> float:
        t = _scheduler_time(epoch, self.steps_at)
        if epochs <= 0 or not 0 <= self.warmup_epochs <= epochs:
            raise ValueError(
                f"TimmCosineLR: warmup_epochs={self.warmup_epochs} must lie in [0, epochs={epochs}] "
                "(is trainer.max_epochs set?)"
            )
        init, floor = self.warmup_start_factor * base, self.final_factor * base
        if t < self.warmup_epochs:
            return init + t * (peak - init) / self.warmup_epochs
        if t >= epochs:
            return floor
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * t / epochs))


@dataclass(frozen=True)
class WarmupMultiStepLR:
    """BoT's ``WarmupMultiStepLR`` (michuanhaohao/reid-strong-baseline ``solver/lr_scheduler.py``, a torch
    ``_LRScheduler``: its constructor steps to ``t = 0``, ``engine/trainer.py`` steps again on every
    ``EPOCH_STARTED``, so epoch 1 trains at t = 1). For group peak ``p``, W warm-up epochs, start factor
    f and milestones M::

        lr(t) = p * w(t) * gamma ** #{m in M : m <= t},   w(t) = f * (1 - t / W) + t / W  (t < W), else 1

    The decay is relative to each group's own lr (torch's ``base_lrs``), so ``base`` is not used.
    """

    warmup_epochs: int = 10
    warmup_start_factor: float = 0.01
    milestones: Sequence[int] = (40, 70)
    gamma: float = 0.1
    steps_at: StepsAt = "epoch_start"

    def __post_init__(self) -> None:
        steps = [int(m) for m in self.milestones]
        if steps != sorted(steps) or any(m <= 0 for m in steps):
            raise ValueError(f"WarmupMultiStepLR: milestones must be increasing positive epochs, got {steps}")
        if self.warmup_epochs < 0:
            raise ValueError(f"WarmupMultiStepLR: warmup_epochs must be >= 0, got {self.warmup_epochs}")
        object.__setattr__(self, "milestones", tuple(steps))

    def __call__(self, epoch: float, peak: float, base: float, epochs: int) -> float:
        t = _scheduler_time(epoch, self.steps_at)
        warm = 1.0
        if t < self.warmup_epochs:
            alpha = t / self.warmup_epochs
            warm = self.warmup_start_factor * (1 - alpha) + alpha
        return peak * warm * self.gamma ** bisect.bisect_right(self.milestones, t)


@dataclass(frozen=True)
class StepDecayLR:
    """torch's ``StepLR`` as Cluster Contrast drives it (``examples/cluster_contrast_train_usl.py``:
    ``StepLR(optimizer, step_size=20, gamma=0.1)``, ``lr_scheduler.step()`` after each epoch)::

        lr(t) = p * gamma ** floor(t / step_size)
    """

    step_size: int = 20
    gamma: float = 0.1
    steps_at: StepsAt = "epoch_end"

    def __post_init__(self) -> None:
        if self.step_size < 1:
            raise ValueError(f"StepDecayLR: step_size must be >= 1, got {self.step_size}")

    def __call__(self, epoch: float, peak: float, base: float, epochs: int) -> float:
        return peak * self.gamma ** (_scheduler_time(epoch, self.steps_at) // self.step_size)


def set_epoch_lr(
    optimizer: Optimizer, schedule: EpochSchedule, epoch: float, base_lr: float, epochs: int | None
) -> list[float]:
    """Set every group's lr for 0-based ``epoch`` (fractional for a ``per_step`` schedule):
    ``schedule(epoch, base_lr * lr_factor, base_lr, epochs)``, where ``lr_factor`` is the group's (1 when it
    has none). Returns the lrs set."""
    if epochs is None or epochs <= 0:
        raise ValueError(
            f"the lr schedule is sized by trainer.max_epochs, got {epochs}; set trainer.max_epochs "
            "or model.schedule=null"
        )
    values = []
    for group in optimizer.param_groups:
        group["lr"] = schedule(epoch, base_lr * float(group.get("lr_factor", 1.0)), base_lr, epochs)
        values.append(group["lr"])
    return values
