"""The official lr schedulers *and the loops that step them*, transcribed.

* timm ``CosineLRScheduler`` as vendored in heshuting555/TransReID ``solver/cosine_lr.py`` (+ the
  ``Scheduler`` base of ``solver/scheduler.py``) and built by ``solver/scheduler_factory.py``; the same
  three files in damo-cv/TransReID-SSL ``transreid_pytorch/solver`` and CASIA-IVA-Lab/PASS-reID
  ``PASS_transreid/solver``. Loops: TransReID ``processor/processor.py`` calls ``scheduler.step(epoch)``
  at the top of ``for epoch in range(1, epochs + 1)``; TransReID-SSL's and PASS's ``processor.py`` call it
  after the epoch's batches.
* BoT ``WarmupMultiStepLR`` (michuanhaohao/reid-strong-baseline ``solver/lr_scheduler.py``), a torch
  ``_LRScheduler`` of 2019: the constructor takes one step (``last_epoch`` -1 -> 0); ``engine/trainer.py``
  steps it again in an ``Events.EPOCH_STARTED`` handler.
* torch ``StepLR`` as alibaba/cluster-contrast-reid ``examples/cluster_contrast_train_usl.py`` drives it:
  ``lr_scheduler.step()`` after each epoch.
* DINO's ``utils.cosine_scheduler`` (facebookresearch/dino, TransReID-SSL ``dino/utils.py``, PASS
  ``PASS/utils.py``: identical) and ``DINOLoss.teacher_temp_schedule``; ``main_dino.py`` /
  ``main_pass.py`` set ``param_group["lr"] = lr_schedule[it]`` for every group and the weight decay of
  group 0 only, at iteration ``it = len(data_loader) * epoch + i``.

Each ``*_loop`` function returns ``lrs[epoch][group]``: the lr every group trains with during each
(0-based) epoch of the official loop, for groups given by their lr before scheduling.
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np


class TimmCosine:
    """Cosine with linear warm-up, one cycle, no noise (t_mul 1, decay_rate 0.1, cycle_limit 1)."""

    def __init__(
        self, group_lrs: list[float], t_initial: int, lr_min: float, warmup_t: int, warmup_lr_init: float
    ):
        self.base_values = list(group_lrs)
        self.t_initial, self.lr_min = t_initial, lr_min
        self.warmup_t, self.warmup_lr_init = warmup_t, warmup_lr_init
        if warmup_t:
            self.warmup_steps = [(v - warmup_lr_init) / warmup_t for v in self.base_values]
            self.current = [warmup_lr_init] * len(group_lrs)  # update_groups(warmup_lr_init) at construction
        else:
            self.warmup_steps = [1.0] * len(group_lrs)
            self.current = list(self.base_values)

    def get_lr(self, t: int) -> list[float]:
        if t < self.warmup_t:
            return [self.warmup_lr_init + t * step for step in self.warmup_steps]
        cycle = t // self.t_initial
        t_curr = t - self.t_initial * cycle
        if cycle >= 1:  # cycle_limit 1: past the first cycle every group sits at lr_min
            return [self.lr_min] * len(self.base_values)
        return [
            self.lr_min + 0.5 * (peak - self.lr_min) * (1 + math.cos(math.pi * t_curr / self.t_initial))
            for peak in self.base_values
        ]

    def step(self, epoch: int) -> None:
        self.current = self.get_lr(epoch)


def transreid_scheduler(group_lrs: list[float], base_lr: float, epochs: int, warmup: int) -> TimmCosine:
    """``create_scheduler`` "type 2": lr_min 0.002 x BASE_LR, warmup_lr_init 0.01 x BASE_LR."""
    return TimmCosine(group_lrs, epochs, 0.002 * base_lr, warmup, 0.01 * base_lr)


def transreid_loop(group_lrs: list[float], base_lr: float, epochs: int, warmup: int) -> list[list[float]]:
    """TransReID ``do_train``: ``scheduler.step(epoch)`` first, then the epoch's batches."""
    scheduler, lrs = transreid_scheduler(group_lrs, base_lr, epochs, warmup), []
    for epoch in range(1, epochs + 1):
        scheduler.step(epoch)
        lrs.append(list(scheduler.current))
    return lrs


def transreid_ssl_loop(group_lrs: list[float], base_lr: float, epochs: int, warmup: int) -> list[list[float]]:
    """TransReID-SSL / PASS ``do_train`` (WARMUP_METHOD cosine): the batches, then ``step(epoch)``."""
    scheduler, lrs = transreid_scheduler(group_lrs, base_lr, epochs, warmup), []
    for epoch in range(1, epochs + 1):
        lrs.append(list(scheduler.current))
        scheduler.step(epoch)
    return lrs


class BoTWarmupMultiStep:
    """``WarmupMultiStepLR`` (linear warm-up) on torch's old ``_LRScheduler`` protocol."""

    def __init__(
        self,
        group_lrs: list[float],
        milestones: list[int],
        gamma: float,
        warmup_factor: float,
        warmup_iters: int,
    ):
        self.base_lrs = list(group_lrs)
        self.milestones, self.gamma = list(milestones), gamma
        self.warmup_factor, self.warmup_iters = warmup_factor, warmup_iters
        self.last_epoch = -1
        self.step()  # _LRScheduler.__init__

    def get_lr(self) -> list[float]:
        factor = 1.0
        if self.last_epoch < self.warmup_iters:
            alpha = self.last_epoch / self.warmup_iters
            factor = self.warmup_factor * (1 - alpha) + alpha
        decay = self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [lr * factor * decay for lr in self.base_lrs]

    def step(self) -> None:
        self.last_epoch += 1
        self.current = self.get_lr()


def bot_loop(
    group_lrs: list[float],
    epochs: int,
    warmup: int,
    warmup_factor: float,
    milestones: list[int],
    gamma: float,
) -> list[list[float]]:
    """reid-strong-baseline ``do_train``: an EPOCH_STARTED handler steps before the epoch's iterations."""
    scheduler, lrs = BoTWarmupMultiStep(group_lrs, milestones, gamma, warmup_factor, warmup), []
    for _ in range(epochs):
        scheduler.step()
        lrs.append(list(scheduler.current))
    return lrs


def cluster_contrast_loop(
    group_lrs: list[float], epochs: int, step_size: int, gamma: float
) -> list[list[float]]:
    """``StepLR``: train the epoch, then ``lr_scheduler.step()``."""
    lrs = []
    for steps_taken in range(epochs):  # the scheduler has stepped once per finished epoch
        lrs.append([lr * gamma ** (steps_taken // step_size) for lr in group_lrs])
    return lrs


def dino_cosine_scheduler(
    base_value: float,
    final_value: float,
    epochs: int,
    niter_per_ep: int,
    warmup_epochs: int = 0,
    start_warmup_value: float = 0.0,
) -> np.ndarray:
    """``utils.cosine_scheduler``: linear warm-up over ``warmup_epochs * niter_per_ep`` iterations (linspace
    from the start value to the base), then a half cosine over the remaining iterations."""
    warmup_iters = warmup_epochs * niter_per_ep
    warm = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_epochs > 0 else np.array([])
    rest = np.arange(epochs * niter_per_ep - warmup_iters)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * rest / len(rest)))
    return np.concatenate((warm, cosine))


def dino_teacher_temperature(warmup_temp: float, temp: float, warmup_epochs: int, epochs: int) -> np.ndarray:
    """``DINOLoss.teacher_temp_schedule``, indexed by the epoch."""
    return np.concatenate(
        (np.linspace(warmup_temp, temp, warmup_epochs), np.ones(epochs - warmup_epochs) * temp)
    )
