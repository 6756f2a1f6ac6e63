"""Query/gallery evaluation shared by the re-ID tasks: supervised (TransReID, BoT), unsupervised (Cluster
Contrast).

The base of a LightningModule that sets ``evaluation`` (:class:`~reid.evaluation.EvalConfig`) and
``sie_at_test`` and whose ``forward(images, camids, viewids)`` gives the retrieval embedding: validation
and test embed each target's query + gallery and rank them with :class:`~reid.evaluation.ReIDEvaluator`,
logging ``val/mAP``, ``val/R1``, ... (``<prefix>/<target>/<metric>`` with several targets).
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from reid.data.reid_datamodule import EvaluationTarget
from reid.evaluation import EvalConfig, ReIDEvaluator
from reid.training.epochs import epochs_completed

METRIC_KEYS = ("mAP", "R1", "R5", "R10", "mINP")


class RetrievalEvaluation(L.LightningModule):
    """Validation/test hooks of a re-ID LightningModule (module docstring)."""

    evaluation: EvalConfig  # set by the task's __init__
    sie_at_test: bool  # whether forward() is given the cameras and views at evaluation
    evaluators: list[ReIDEvaluator]
    evaluation_names: list[str]

    # ---- evaluation -----------------------------------------------------------------------
    # One evaluator per validation/test dataloader (one per target domain, ``dataloader_idx``). With several
    # targets every one logs ``<prefix>/<target>/<metric>`` and the plain ``<prefix>/<metric>`` names are the
    # first target's, so the checkpoint monitor and sweeps (``val/mAP``) follow the first target.
    def _start_evaluation(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "num_query"):
            raise RuntimeError(
                f"{type(self).__name__}: evaluation needs a datamodule with `num_query` (query records "
                "first, then gallery); pass datamodule= to trainer.fit/validate/test"
            )
        targets = getattr(datamodule, "validation_targets" if stage == "val" else "evaluation_targets", None)
        if targets is None:  # a datamodule of one target
            trials = getattr(getattr(datamodule, "test_data", None), "trials", ()) or ()
            targets = [EvaluationTarget("", datamodule.num_query, tuple(trials))]
        self.evaluation_names = [target.name for target in targets] if len(targets) > 1 else [""]
        self.evaluators = [ReIDEvaluator(t.num_query, self.evaluation, trials=t.trials) for t in targets]

    def _evaluation_step(self, batch: dict[str, Tensor], dataloader_idx: int = 0) -> None:
        if self.sie_at_test:
            embedding = self(batch["image"], batch["camid"], batch["viewid"])
        else:
            embedding = self(batch["image"])
        self.evaluators[dataloader_idx].update(embedding, batch["pid"], batch["camid"], batch["index"])

    def _finish_evaluation(self, prefix: str) -> dict[str, float]:
        """Log, print and return the metrics of every target (names above); see :meth:`_target_metrics`."""
        evaluators, names = self.evaluators, self.evaluation_names
        self.evaluators = []
        metrics: dict[str, float] = {}
        for evaluator, name in zip(evaluators, names, strict=True):
            found = self._target_metrics(evaluator, f"{prefix}/{name}" if name else prefix)
            if not metrics and name:  # the first of several targets also under the plain names
                metrics |= {key.replace(f"{prefix}/{name}/", f"{prefix}/", 1): v for key, v in found.items()}
            metrics |= found
        self.log_dict(metrics, sync_dist=False, add_dataloader_idx=False)
        return metrics

    def _target_metrics(self, evaluator: ReIDEvaluator, prefix: str) -> dict[str, float]:
        """One target's metrics with ``num_valid_queries / num_queries``, printed: the means are over the
        queries with a true match in the gallery (another camera); the others are excluded."""
        rank = evaluator.compute()
        result = rank.as_dict()
        metrics = {f"{prefix}/{key}": float(result[key]) for key in METRIC_KEYS}
        metrics[f"{prefix}/num_valid_queries"] = float(rank.num_valid_queries)
        metrics[f"{prefix}/num_queries"] = float(rank.num_queries)
        header = "".join(f"{key:>8}" for key in METRIC_KEYS) + f"{'valid / all queries':>22}"
        counts = f"{rank.num_valid_queries} / {rank.num_queries}"
        row = "".join(f"{result[key]:>8.2f}" for key in METRIC_KEYS) + f"{counts:>22}"
        self.print(f"\n[{prefix}] epoch {epochs_completed(self.trainer)}\n{header}\n{row}")
        excluded = rank.num_queries - rank.num_valid_queries
        if excluded:
            rank_zero_warn(
                f"[{prefix}] {excluded} of {rank.num_queries} queries have no true match in the gallery "
                f"(same identity, another camera) and are excluded: the metrics rest on {counts} queries"
            )
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation("val")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")
