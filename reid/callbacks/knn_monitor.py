"""Retrieval check of the teacher during self-supervised pretraining.

Every ``every_n_epochs`` epochs (and once before training when ``at_start``), the teacher
backbone's features (``pl_module.monitor_features``: [CLS], or cat(CLS, mean(parts)) for PASS) of a
labelled query + gallery set (``trainer.datamodule.monitor_dataloader()``), computed in eval mode
(batch-norm layers use their running statistics and the monitor images never update them), are
ranked with :class:`reid.evaluation.ReIDEvaluator`; ``val/mAP``, ``val/R1``, ``val/R5``, ``val/R10`` and
``val/mINP`` are logged like fine-tuning metrics, so a user sees whether pretraining helps.
Under DDP each rank embeds every ``world_size``-th batch; the evaluator gathers and de-duplicates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from reid.evaluation import EvalConfig, ReIDEvaluator
from reid.evaluation.evaluator import update_with_batch

if TYPE_CHECKING:
    from reid.tasks.ssl_pretrain import SSLPretrainTask


class KNNMonitor(L.Callback):
    """Args:
    every_n_epochs: run after epochs n, 2n, ... and after the last epoch.
    at_start: also run before the first step (the initialisation's score, logged at step 0).
    evaluation: an :class:`EvalConfig`; defaults to ``pl_module.evaluation``, else cosine.
    """

    def __init__(
        self, every_n_epochs: int = 10, at_start: bool = True, evaluation: EvalConfig | None = None
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"KNNMonitor: every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.at_start = at_start
        self.evaluation = evaluation
        self.history: list[tuple[int, dict[str, float]]] = []  # (global step, metrics)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_start and trainer.global_step == 0:
            metrics = self.evaluate(trainer, pl_module)
            if metrics:
                for logger in trainer.loggers:
                    logger.log_metrics(metrics, step=0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        if epoch % self.every_n_epochs == 0 or last:
            metrics = self.evaluate(trainer, pl_module)
            if metrics:
                pl_module.log_dict(metrics, on_step=False, on_epoch=True)

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Rank the monitor set with the current teacher; {} when the datamodule has no monitor set."""
        datamodule: Any = getattr(trainer, "datamodule", None)  # attached by the Trainer at run time
        loader = datamodule.monitor_dataloader() if hasattr(datamodule, "monitor_dataloader") else None
        if loader is None:
            rank_zero_info("KNNMonitor: the datamodule has no monitor_dataset; skipping the retrieval check")
            return {}
        config = self.evaluation or getattr(pl_module, "evaluation", None) or EvalConfig(metric="cosine")
        evaluator = ReIDEvaluator(datamodule.num_query, config)
        was_training = pl_module.training
        pl_module.eval()  # batch-norm layers (ICS stem) use, and keep, their running statistics
        try:
            for i, batch in enumerate(loader):
                if i % trainer.world_size != trainer.global_rank:
                    continue
                embed = cast("SSLPretrainTask", pl_module).monitor_features
                update_with_batch(evaluator, embed, batch, config, pl_module.device)
        finally:
            pl_module.train(was_training)
        result = evaluator.compute()
        metrics = {f"val/{name}": value for name, value in result.as_dict().items()}
        metrics |= {
            "val/num_valid_queries": float(result.num_valid_queries),
            "val/num_queries": float(result.num_queries),
        }
        self.history.append((trainer.global_step, metrics))
        rank_zero_info(
            f"KNNMonitor step {trainer.global_step}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if "queries" not in k)
            + f" ({result.num_valid_queries} / {result.num_queries} queries with a match)"
        )
        return metrics
