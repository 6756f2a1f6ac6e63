"""Stop training on a NaN/inf loss or weights before a broken checkpoint is written.

fp16 mixed precision is known to drive DINO to NaN (facebookresearch/dino recommends fp32 or
bf16 for ViTs); a diverged supervised run (lr too high) ends the same way. Lightning would go on
and save ``last.ckpt`` full of NaN, overwriting the last good one. This callback raises
:class:`NonFiniteLossError` instead, naming the step, the epoch and the loss terms:

* ``on_train_batch_end``: the returned loss (a tensor or ``{"loss": ...}``) and any logged
  ``train/*`` value must be finite. Lightning runs checkpoint callbacks after all others, so the
  raise comes before ``ModelCheckpoint`` of that step.
* ``on_save_checkpoint``: every floating tensor of the module's state dict must be finite, so no
  checkpoint with NaN weights is ever written, whoever triggers the save.

Works for every task (the supervised TransReID task and the DINO/PASS pretraining task).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN or inf; the message says where and what to try."""


_ADVICE = (
    "Lower the learning rate or raise warmup; with trainer.precision=16-mixed use bf16-mixed or 32-true "
    "(fp16 overflows in ViT attention / DINO); check gradient clipping."
)


def _loss_of(outputs: Any) -> Tensor | None:
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), Tensor):
        return outputs["loss"]
    return None


def nonfinite_entries(values: Mapping[str, Any]) -> list[str]:
    """Names (with values) of the scalar entries of ``values`` that are NaN or inf."""
    bad = []
    for name, value in values.items():
        number = value.detach().float() if isinstance(value, Tensor) else value
        if isinstance(number, Tensor):
            if number.numel() == 1 and not torch.isfinite(number).item():
                bad.append(f"{name}={number.item()}")
        elif isinstance(number, float) and not math.isfinite(number):
            bad.append(f"{name}={number}")
    return bad


class NonFiniteGuard(L.Callback):
    """Raise :class:`NonFiniteLossError` on a non-finite loss / logged train metric / weight.

    Args:
        check_weights_on_save: also scan the state dict before each checkpoint is written.
    """

    def __init__(self, check_weights_on_save: bool = True) -> None:
        self.check_weights_on_save = check_weights_on_save

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = _loss_of(outputs)
        logged = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        bad = nonfinite_entries({"loss": loss} if loss is not None else {})
        if bad or nonfinite_entries(logged):
            bad += nonfinite_entries(logged)
            raise NonFiniteLossError(
                f"{type(pl_module).__name__}: non-finite training values at global step "
                f"{trainer.global_step} "
                f"(epoch {trainer.current_epoch}, batch {batch_idx}, precision {trainer.precision}): "
                f"{', '.join(bad)}. Stopped before writing a checkpoint. {_ADVICE}"
            )

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not self.check_weights_on_save:
            return
        state = checkpoint.get("state_dict", {})
        bad = [
            name
            for name, tensor in state.items()
            if isinstance(tensor, Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()
        ]
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteLossError(
                f"{type(pl_module).__name__}: refusing to write a checkpoint at global step "
                f"{trainer.global_step}: "
                f"non-finite weights in {shown}. {_ADVICE}"
            )
