"""Optimiser parameter groups, the official epoch-wise lr schedules and DINO's per-iteration arrays."""

from reid.optim.epoch_schedules import (
    EpochSchedule,
    StepDecayLR,
    TimmCosineLR,
    WarmupMultiStepLR,
    set_epoch_lr,
)
from reid.optim.param_groups import OptimizerFactory, ParamGroupConfig, build_param_groups
from reid.optim.schedules import cosine_schedule

__all__ = [
    "EpochSchedule",
    "OptimizerFactory",
    "ParamGroupConfig",
    "StepDecayLR",
    "TimmCosineLR",
    "WarmupMultiStepLR",
    "build_param_groups",
    "cosine_schedule",
    "set_epoch_lr",
]
