"""Optimiser parameter groups and precomputed lr schedules."""

from reid.optim.param_groups import ParamGroupConfig, build_param_groups
from reid.optim.schedules import (
    ArrayLR,
    cosine_schedule,
    per_step_scheduler,
    transreid_schedule,
    warmup_multistep_schedule,
)

__all__ = [
    "ArrayLR",
    "ParamGroupConfig",
    "build_param_groups",
    "cosine_schedule",
    "per_step_scheduler",
    "transreid_schedule",
    "warmup_multistep_schedule",
]
