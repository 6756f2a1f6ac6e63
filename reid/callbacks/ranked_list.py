"""Pictures of a run's evaluations: ranked lists, CMC curves, mAP per epoch, and the page showing them.

After each test evaluation (and each validation with ``on_validation``), for every target, into
``dirpath`` (``<run>/pictures``):

* ``ranked_<stage>_<target>_epoch<k>.png``: the ``worst`` and ``best`` queries by AP, each with its
  ``top_k`` nearest gallery images (``reid.visualization.ranked_list``), also logged as an image to every
  logger with ``log_image`` (wandb: ``pictures/ranked_<stage>/<target>``); beside it a ``.json`` of what
  each row shows (image paths, distances, statuses);
* ``cmc_<stage>_epoch<k>.png``: the CMC curve of every target;
* after a test and at the end of fit, ``map_per_epoch.png`` from the CSV logger's ``metrics.csv``, or,
  without one (``logger=wandb``), from the mAP this callback records at every evaluation;
* ``index.html`` showing them all.

What it reads from the task (``reid.tasks.retrieval_evaluation``, the evaluation of TransReID, BoT and
Cluster Contrast): ``evaluators`` (one :class:`~reid.evaluation.ReIDEvaluator` per evaluation dataloader,
filled during the evaluation epoch) and ``evaluation`` (the :class:`~reid.evaluation.EvalConfig`). Lightning
calls a callback's ``on_*_epoch_end`` before the module's, so the evaluators are taken then, still holding
the epoch's features; they are ranked in ``on_*_end`` (gathered from every rank under DDP) and released.
Only per-query AP and top-k rows are computed, chunk by chunk (``reid.visualization.ranking``): no query x
gallery matrix is kept. Image paths come from the evaluation loader's dataset (``records``, query first).
A module without evaluators (self-supervised pretraining) gets the mAP curve only; a VehicleID target
(trials, no single gallery) gets no ranked list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from PIL import Image

from reid.data.records import Record
from reid.evaluation import EvalConfig, RankResult, ReIDEvaluator
from reid.evaluation.evaluator import EvalState
from reid.training.epochs import epochs_completed
from reid.visualization.curves import (
    MAP_COLUMN,
    read_map_history,
    save_cmc_curve,
    save_map_curve,
    without_plain_copies,
)
from reid.visualization.index_html import write_index
from reid.visualization.ranked_list import RankedRow, render_ranked_lists
from reid.visualization.ranking import rank_queries, ranked_rows, select_queries

MAP_CURVE = "map_per_epoch.png"


@dataclass
class _HeldEvaluation:
    """The evaluators of one evaluation epoch, taken before the task computes and drops them."""

    evaluators: list[ReIDEvaluator]
    targets: list[str]
    config: EvalConfig
    epoch: int


def _rows_record(rows: Sequence[RankedRow], cell: tuple[int, int]) -> dict[str, Any]:
    """What a ranked-list picture shows, row by row (its ``.json`` beside the ``.png``)."""
    return {
        "cell": list(cell),
        "rows": [
            {
                "title": row.title,
                "query": str(row.query),
                "gallery": [str(path) for path in row.gallery],
                "distances": [float(d) for d in row.distances],
                "status": list(row.status),
            }
            for row in rows
        ],
    }


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


class RankedListPictures(L.Callback):
    """Args:
    dirpath: the pictures folder (``${paths.output_dir}/pictures``).
    worst, best: queries per ranked-list picture: the lowest-AP and the highest-AP ones.
    top_k: gallery images per query.
    on_validation: also after every validation (each costs one more ranking pass over the features).
    cell: ``(height, width)`` of each image in the ranked lists.
    epoch: the epoch in the file names and titles; ``None``: the training epochs completed (a test outside
        ``fit`` that loaded no training state, as ``reid.tools.visualize ranked``, passes its checkpoint's).
    """

    def __init__(
        self,
        dirpath: str | Path,
        worst: int = 4,
        best: int = 4,
        top_k: int = 10,
        on_validation: bool = False,
        cell: Sequence[int] = (128, 64),
        epoch: int | None = None,
    ) -> None:
        for key, value in (("worst", worst), ("best", best)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"callbacks.ranked_list.{key}={value!r}: expected an integer >= 0")
        if worst + best < 1:
            raise ValueError(
                "callbacks.ranked_list: worst + best must be >= 1 (or set callbacks.ranked_list=null)"
            )
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"callbacks.ranked_list.top_k={top_k!r}: expected an integer >= 1")
        if len(cell) != 2 or min(int(v) for v in cell) < 1:
            raise ValueError(f"callbacks.ranked_list.cell={list(cell)}: expected [height, width] >= 1")
        self.dirpath = Path(dirpath)
        self.worst, self.best, self.top_k = worst, best, top_k
        self.on_validation = bool(on_validation)
        self.cell = (int(cell[0]), int(cell[1]))
        self.epoch = epoch
        self._held: _HeldEvaluation | None = None
        self._map_history: dict[str, list[tuple[int, float]]] = {}
        """``{series: [(epochs completed, mAP)]}`` recorded at each evaluation from the logged metrics, for
        ``map_per_epoch.png`` of runs without a CSV logger (wandb alone); saved in checkpoints."""

    # ---- Lightning hooks ----------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_validation and not trainer.sanity_checking:
            self._hold(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record_map(trainer, "val")
        self._draw(trainer, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hold(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record_map(trainer, "test")
        self._draw(trainer, "test")

    def state_dict(self) -> dict[str, Any]:
        return {
            "map_history": {name: [list(p) for p in points] for name, points in self._map_history.items()}
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        history = state_dict.get("map_history") or {}
        self._map_history = {
            name: [(int(e), float(v)) for e, v in points] for name, points in history.items()
        }

    def _record_map(self, trainer: L.Trainer, stage: str) -> None:
        logged = getattr(trainer, "callback_metrics", None) or {}
        found = {n: v for n, v in logged.items() if n.startswith(f"{stage}/") and MAP_COLUMN.match(n)}
        if not found:  # a module that logs no mAP (self-supervised pretraining without a monitor)
            return
        epoch = epochs_completed(trainer)
        for name, value in found.items():
            self._map_history.setdefault(name, []).append((epoch, float(value)))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._draw_map_curve(trainer)
            if self.dirpath.is_dir():
                write_index(self.dirpath)

    # ---- the pictures -------------------------------------------------------------------------
    def _hold(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluators = list(getattr(pl_module, "evaluators", None) or [])
        config = getattr(pl_module, "evaluation", None)  # the task's EvalConfig
        if not evaluators or config is None:
            return
        datamodule = getattr(trainer, "datamodule", None)
        targets = [t.name for t in getattr(datamodule, "evaluation_targets", None) or []]
        if len(targets) != len(evaluators):
            targets = list(getattr(pl_module, "evaluation_names", None) or [""] * len(evaluators))
        epoch = epochs_completed(trainer) if self.epoch is None else self.epoch
        self._held = _HeldEvaluation(evaluators, targets, config, epoch)

    def _draw(self, trainer: L.Trainer, stage: str) -> None:
        held, self._held = self._held, None  # the features are released when this returns
        if held is None:
            return
        results: dict[str, RankResult] = {}
        for index, (evaluator, target) in enumerate(zip(held.evaluators, held.targets, strict=True)):
            if evaluator.trials:
                rank_zero_info(
                    f"RankedListPictures: {target or stage} is evaluated in trials; no ranked list"
                )
                continue
            state = evaluator.gathered_state()  # collective under DDP: every rank calls it
            if not trainer.is_global_zero:
                continue
            results[target or stage] = self._ranked_list(
                trainer, stage, index, target, evaluator, state, held
            )
        if trainer.is_global_zero and results:
            save_cmc_curve(
                results,
                self.dirpath / f"cmc_{stage}_epoch{held.epoch}.png",
                f"CMC, {stage} after epoch {held.epoch}",
            )
            if stage == "test":
                self._draw_map_curve(trainer)
            write_index(self.dirpath)

    def _ranked_list(
        self,
        trainer: L.Trainer,
        stage: str,
        index: int,
        target: str,
        evaluator: ReIDEvaluator,
        state: EvalState,
        held: _HeldEvaluation,
    ) -> RankResult:
        """Rank one target, draw and save its ranked lists (when its records are known); its metrics."""
        features = state.features if state.features.dtype == torch.float64 else state.features.float()
        q = evaluator.num_query
        ranking = rank_queries(
            features[:q], features[q:], state.pids[:q], state.pids[q:], state.camids[:q], state.camids[q:],
            held.config, self.top_k,
        )  # fmt: skip
        records = self._records(trainer, stage, index, state.indices.numel())
        if records is None:
            return ranking.result
        selection = select_queries(ranking, self.worst, self.best)
        if not selection:
            return ranking.result
        rows = ranked_rows(ranking, selection, records[:q], records[q:])
        image = render_ranked_lists(rows, self.cell)
        name = "_".join(part for part in ("ranked", stage, _file_part(target), f"epoch{held.epoch}") if part)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        image.save(self.dirpath / f"{name}.png", compress_level=1)  # fast; the pictures are small
        (self.dirpath / f"{name}.json").write_text(json.dumps(_rows_record(rows, self.cell), indent=1))
        self._log_image(trainer, f"pictures/ranked_{stage}" + (f"/{target}" if target else ""), image, name)
        return ranking.result

    def _records(self, trainer: L.Trainer, stage: str, index: int, count: int) -> list[Record] | None:
        """The records of evaluation dataloader ``index`` (query then gallery), or None with a warning."""
        loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        records = (
            getattr(getattr(loaders[index], "dataset", None), "records", None)
            if index < len(loaders)
            else None
        )
        if records is None or len(records) != count:
            found = "no records" if records is None else f"{len(records)} records"
            rank_zero_warn(
                f"RankedListPictures: the {stage} dataloader {index} has {found} for {count} evaluated "
                "images; no ranked list (expected a dataset with `records`, query first, as ReIDDataModule's)"
            )
            return None
        return list(records)

    @staticmethod
    def _log_image(trainer: L.Trainer, key: str, image: Image.Image, caption: str) -> None:
        for logger in trainer.loggers:
            log_image = getattr(logger, "log_image", None)  # wandb's (offline by default: conf/logger/wandb)
            if callable(log_image):
                log_image(key=key, images=[image], step=trainer.global_step, caption=[caption])

    def _draw_map_curve(self, trainer: L.Trainer) -> None:
        """From the CSV logger's ``metrics.csv`` (every row since the run started, across resumes), else
        from the history this callback recorded (``logger=wandb`` alone)."""
        history: dict[str, list[tuple[int, float]]] = {}
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.save()  # rows logged so far, to disk
                path = Path(logger.experiment.metrics_file_path)
                history = read_map_history(path) if path.is_file() else {}
                break
        history = history or without_plain_copies(self._map_history)
        if history:
            save_map_curve(history, self.dirpath / MAP_CURVE)
