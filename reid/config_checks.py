"""Checks of the composed run config before anything is built, for settings that only make sense together
(a key of the wrong name or type already failed at compose time: ``reid.config_store``).

:class:`RecordRunSettings` writes the settings a resume must keep (seed, batch size, epochs, ...)
into every checkpoint, and :func:`warn_on_changed_settings` lists the ones a resume changed.

The one adjustment: under DDP on CPU torch's ``SyncBatchNorm`` (GPUs only) would fail at the first
forward, so ``trainer.sync_batchnorm`` there puts ``reid.training.sync_batchnorm.GlobalBatchNormSync`` in
its place, with a logged line: N CPU processes normalise with the global batch's statistics too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("reid")

_ABSENT = object()


class ConfigValueError(ValueError):
    """A config value of the wrong type or range; the message names the key and what was expected."""


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` for settings that only make sense together (the weights selection
    and its validation split, fp16 on CPU); under DDP on CPU ``trainer.sync_batchnorm`` uses
    ``GlobalBatchNormSync`` (logged). Keys and types are checked at compose time by the group schemas
    (``reid.config_store``), ranges by the constructors that take them."""
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
