"""Checks of the composed run config before anything is built: each bad value is refused with the key,
the value given and what was expected (``data.batch_size=abc`` would otherwise fail deep inside the
sampler, ``trainer.max_epochs=abc`` inside Lightning, after the dataset was parsed).

:class:`RecordRunSettings` writes the settings a resume must keep (seed, batch size, epochs, ...)
into every checkpoint, and :func:`warn_on_changed_settings` lists the ones a resume changed.

The one adjustment: under DDP on CPU torch's ``SyncBatchNorm`` (GPUs only) would fail at the first
forward, so ``trainer.sync_batchnorm`` there puts ``reid.training.sync_batchnorm.GlobalBatchNormSync`` in
its place, with a logged line: N CPU processes normalise with the global batch's statistics too.
"""

from __future__ import annotations

import inspect
import logging
import numbers
from collections.abc import Callable, Mapping
from typing import TypeGuard

import lightning as L
import torch
from hydra.utils import get_object as _locate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

log = logging.getLogger("reid")

_ABSENT = object()


class ConfigValueError(ValueError):
    """A config value of the wrong type or range; the message names the key and what was expected."""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


_Rule = tuple[Callable[[object], bool], str]
_POSITIVE_INT: _Rule = (lambda v: _is_int(v) and v > 0, "a positive integer")
_RULES: dict[str, _Rule] = {
    "seed": (_is_int, "an integer"),
    "data.batch_size": _POSITIVE_INT,
    "data.test_batch_size": _POSITIVE_INT,
    "data.num_instances": _POSITIVE_INT,
    "data.num_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data.image_size": (
        lambda v: (
            isinstance(v, ListConfig | list | tuple) and len(v) == 2 and all(_is_int(s) and s > 0 for s in v)
        ),
        "[height, width]: two positive integers",
    ),
    "trainer.max_epochs": (
        lambda v: v is None or (_is_int(v) and v >= -1),
        "an integer >= -1 (-1: no limit)",
    ),
    "trainer.max_steps": (lambda v: _is_int(v) and v >= -1, "an integer >= -1 (-1: no limit)"),
    "model.optimizer.lr": (lambda v: _is_number(v) and v > 0, "a positive number"),
}
"""Keys checked when the config has them (the SSL datamodule, for one, has no ``num_instances``)."""


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` for the first bad value of :data:`_RULES` or a ``model`` key its
    task does not take; under DDP on CPU ``trainer.sync_batchnorm`` uses ``GlobalBatchNormSync`` (logged)."""
    for key, (valid, expected) in _RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        if value is _ABSENT:
            continue
        if not valid(value):
            shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
            raise ConfigValueError(f"{key}={shown!r} ({type(value).__name__}): expected {expected}")
    _model_keys_are_task_parameters(cfg)
    _selection_has_a_validation_split(cfg)
    _cpu_ddp_global_batchnorm(cfg)
    _fp16_with_a_scaler_on_cpu(cfg)


def _selection_has_a_validation_split(cfg: DictConfig) -> None:
    """``test_weights`` is ``last`` or ``best``; ``best`` chooses on ``val/mAP``, which must then come from
    identities held out of training (``data.val_identities`` > 0), never from the test split."""
    weights = cfg.get("test_weights", "last")
    if weights not in ("last", "best"):
        raise ConfigValueError(
            f"test_weights={weights!r}: expected last or best (selection=last | selection=best)"
        )
    if weights != "best":
        return
    held_out = OmegaConf.select(cfg, "data.val_identities", default=0)
    if not held_out:
        raise ConfigValueError(
            "test_weights=best chooses the checkpoint with the best val/mAP, and with data.val_identities="
            f"{held_out} val/mAP is scored on the test split: set data.val_identities to the training "
            "identities to hold out (selection=best sets 100), or report the last epoch (selection=last)"
        )
    if OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor", default=None) != "val/mAP":
        raise ConfigValueError(
            "test_weights=best needs callbacks.model_checkpoint.monitor=val/mAP (selection=best sets it)"
        )


_SPECIAL_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def _model_keys_are_task_parameters(cfg: DictConfig) -> None:
    """Every key of ``cfg.model`` must be a parameter of its ``_target_`` (the task): a key the task does
    not take, such as ``model/classifier=arcface`` under a self-supervised or clustering model or a
    ``+model.<typo>=...``, is named with the task's parameters instead of failing in its constructor."""
    model = cfg.get("model")
    if not isinstance(model, DictConfig) or not isinstance(model.get("_target_"), str):
        return
    try:
        task = _locate(model._target_)
        parameters = inspect.signature(task).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return  # an unknown target is reported by instantiate itself, with its import error
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [str(key) for key in model if key not in _SPECIAL_KEYS and key not in parameters]
    if unknown:
        taken = ", ".join(name for name in parameters if name not in ("data_info", "evaluation"))
        raise ConfigValueError(
            f"model.{unknown[0]}: {model._target_} takes no '{unknown[0]}' (its keys: {taken}); drop it or "
            "pick a model that has it"
        )


def _runs_on_cpu(accelerator: object) -> bool:
    return accelerator == "cpu" or (accelerator in (None, "auto") and not torch.cuda.is_available())


def _is_ddp(strategy: object) -> bool:
    if isinstance(strategy, DictConfig):
        return "DDP" in str(strategy.get("_target_", ""))
    return isinstance(strategy, str) and strategy.startswith("ddp")


def _cpu_ddp_global_batchnorm(cfg: DictConfig) -> None:
    """``trainer.sync_batchnorm`` under DDP on CPU: torch's SyncBatchNorm runs on CUDA/XPU only, so the
    batch statistics are synchronised by ``reid.training.sync_batchnorm`` instead (logged)."""
    trainer = cfg.get("trainer")
    if trainer is None or not trainer.get("sync_batchnorm", False):
        return
    if _is_ddp(trainer.get("strategy")) and _runs_on_cpu(trainer.get("accelerator")):
        log.info(
            "trainer.sync_batchnorm=true on CPU: torch's SyncBatchNorm runs on CUDA/XPU only, so batch "
            "normalisation is synchronised by reid.training.sync_batchnorm.GlobalBatchNormSync (gloo)"
        )
        with open_dict(cfg):
            cfg.trainer.sync_batchnorm = False
            plugins = list(cfg.trainer.get("plugins") or [])
            cfg.trainer.plugins = [*plugins, {"_target_": "reid.training.sync_batchnorm.GlobalBatchNormSync"}]


def _fp16_with_a_scaler_on_cpu(cfg: DictConfig) -> None:
    """``trainer.precision=16-mixed`` on CPU: Lightning would switch to bf16 without a scaler; the run
    gets what it asked for, fp16 autocast with a GradScaler (the official loops' AMP), through an explicit
    ``MixedPrecision`` plugin (logged)."""
    trainer = cfg.get("trainer")
    if (
        trainer is None
        or str(trainer.get("precision")) != "16-mixed"
        or not _runs_on_cpu(trainer.get("accelerator"))
    ):
        return
    log.info(
        "trainer.precision=16-mixed on CPU: fp16 autocast with a GradScaler (Lightning alone would use bf16)"
    )
    with open_dict(cfg):
        cfg.trainer.precision = None
        plugin = {"_target_": "lightning.pytorch.plugins.precision.MixedPrecision", "precision": "16-mixed"}
        cfg.trainer.plugins = [*list(cfg.trainer.get("plugins") or []), plugin | {"device": "cpu"}]


RESUME_KEYS = (
    "seed",
    "data.batch_size",
    "data.num_instances",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.accumulate_grad_batches",
    "model.optimizer.lr",
)
"""Settings a resumed run should keep: a change makes it another run than the one checkpointed."""

SETTINGS_KEY = "reid_run_settings"
"""Where :class:`RecordRunSettings` puts :func:`run_settings` in every checkpoint."""


def run_settings(cfg: DictConfig) -> dict[str, object]:
    """The :data:`RESUME_KEYS` of ``cfg`` as plain values (weights-only loadable)."""
    found: dict[str, object] = {}
    for key in RESUME_KEYS:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        if value is not _ABSENT:
            found[key] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return found


def resume_differences(saved: Mapping[str, object], current: Mapping[str, object]) -> list[str]:
    """``key: checkpoint -> now`` for each setting that differs (keys of one side only are skipped)."""
    return [f"{k}: {saved[k]!r} -> {current[k]!r}" for k in current if k in saved and saved[k] != current[k]]


def warn_on_changed_settings(checkpoint: Mapping[str, object], cfg: DictConfig, path: str) -> list[str]:
    """Log a warning listing the settings in which ``cfg`` differs from the run ``checkpoint`` was
    saved by (nothing for checkpoints written before the settings were recorded); returns them."""
    saved = checkpoint.get(SETTINGS_KEY)
    if not isinstance(saved, Mapping):
        return []
    changed = resume_differences(saved, run_settings(cfg))
    if changed:
        log.warning(
            "resuming %s with settings that differ from the run that saved it (%s): the result is not that "
            "run's; use its own overrides (.hydra/overrides.yaml of its first start) to continue it exactly",
            path,
            "; ".join(changed),
        )
    return changed


class RecordRunSettings(Callback):
    """Writes :func:`run_settings` into every checkpoint, so that a resume can say what changed."""

    def __init__(self, settings: Mapping[str, object]) -> None:
        self.settings = dict(settings)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[SETTINGS_KEY] = dict(self.settings)
