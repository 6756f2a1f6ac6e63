"""A CSV logger whose ``metrics.csv`` survives a resumed run.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when its writer starts, so resuming a
run in its own folder (``hydra.run.dir=<run folder> ckpt_path=last``) kept only the rows written
after the resume. :class:`ResumableCSVLogger` keeps the file: its header seeds the writer's keys (a
later key still rewrites the file once with the wider header, as Lightning does), and
:meth:`ResumableCSVLogger.resume_at` drops the rows logged after the checkpoint's step, which the
resumed run logs again, so an interrupted and resumed run leaves the rows of an uninterrupted one.
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_info


class AppendingWriter(ExperimentWriter):
    """Lightning's writer without the deletion: an existing ``metrics.csv`` is appended to."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])

    def drop_rows_after(self, step: int) -> int:
        """Remove the rows whose ``step`` is greater than ``step``; returns how many were removed."""
        if not self._fs.isfile(self.metrics_file_path):
            return 0
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = list(csv.DictReader(file))
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) <= step]
        if len(kept) < len(rows):
            self._rewrite(kept)
        return len(rows) - len(kept)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        tmp = self.metrics_file_path + ".tmp"
        with self._fs.open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
        self._fs.mv(tmp, self.metrics_file_path)  # the full file replaces the old one in one step


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` (same arguments) that appends to an existing ``metrics.csv`` instead of deleting it.

    ``conf/logger/csv.yaml`` builds it; :func:`reid.run.run` calls :meth:`resume_at` with the
    checkpoint's step when a run resumes.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def resume_at(self, step: int) -> None:
        """A run resumes from a checkpoint at ``step``: drop the rows logged after it (logged again)."""
        writer = self.experiment
        if isinstance(writer, AppendingWriter):
            dropped = writer.drop_rows_after(step)
            if dropped:
                rank_zero_info(
                    f"{writer.metrics_file_path}: {dropped} rows after step {step} dropped (re-logged)"
                )
