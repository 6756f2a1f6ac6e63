"""``train/grad_scale``: the loss scale of fp16 mixed precision (``trainer.precision=16-mixed``).

The official TransReID, TransReID-SSL and PASS loops train under ``torch.cuda.amp`` with a
``GradScaler``: the loss is multiplied by a scale before backward, a step whose gradients overflow is
skipped and the scale halved, and the scale doubles after 2,000 clean steps. The scale is therefore
part of the training state (Lightning saves the scaler in every checkpoint and restores it on resume)
and a falling scale is the first sign of overflow, so it is logged at every optimiser step. Under
``bf16-mixed`` and ``32-true`` there is no scaler and nothing is logged.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class GradScaleLog(L.Callback):
    """Logs the GradScaler's current scale as ``train/grad_scale`` before every optimiser step."""

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            pl_module.log("train/grad_scale", float(scaler.get_scale()), on_step=True, on_epoch=False)
