"""A CSV logger whose ``metrics.csv`` survives kills and resumed runs.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when its writer starts and keeps the rows
in memory until every 100th step, so a resumed run kept only the rows written after the resume and a
killed one lost up to 100 steps of rows, validation rows among them. :class:`ResumableCSVLogger`:

* keeps the file: its header seeds the writer's keys;
* writes every row when it is logged, in one ``write`` of the whole line on a file opened for
  appending, flushed and synced (a kill leaves whole rows; a key seen for the first time rewrites the
  file with the wider header into a temporary file that replaces it in one step);
* checks the file it finds before the run logs anything: a last row cut by a kill is dropped (logged),
  a file that is not a CSV of this run (binary, another header) is refused, naming it;
* :meth:`ResumableCSVLogger.resume_at` drops the rows logged after the checkpoint's step, which the
  resumed run logs again, so an interrupted and resumed run leaves the rows of an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from typing import cast

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_info

log = logging.getLogger("reid")


class MetricsFileError(ValueError):
    """A ``metrics.csv`` that cannot be this run's log; the message names the file and what to do."""


def _rows_of(path: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the complete rows of ``path``; a last line cut by a kill (no end of line, or
    another number of fields) is dropped with a warning. Raises :class:`MetricsFileError` for a file
    that is not a CSV log (undecodable bytes, no ``step`` column)."""
    try:
        with open(path, encoding="utf-8", newline="") as file:
            text = file.read()
    except UnicodeDecodeError as err:
        raise MetricsFileError(
            f"{path} is not a CSV log (undecodable bytes at offset {err.start}); move it away or give the "
            "run another folder (hydra.run.dir=...)"
        ) from err
    lines = text.splitlines(keepends=True)
    if not lines:
        return [], []
    header = next(csv.reader([lines[0]]))
    if "step" not in header:
        raise MetricsFileError(
            f"{path} has no 'step' column (header {header[:5]}...): not a metrics.csv of a reid run; move it "
            "away or give the run another folder"
        )
    body = lines[1:]
    if body and (not body[-1].endswith("\n") or len(next(csv.reader([body[-1]]))) != len(header)):
        log.warning("%s: its last row was cut by a kill (%r); dropped", path, body[-1][:80])
        body = body[:-1]
    rows = list(csv.DictReader(io.StringIO("".join([lines[0], *body]))))
    if any(None in row for row in rows):
        raise MetricsFileError(f"{path}: a row has more fields than the header; move it away or repair it")
    return header, rows


class AppendingWriter(ExperimentWriter):
    """Lightning's writer without the deletion and without the buffering (module docstring)."""

    def _check_log_dir_exists(self) -> None:
        self.rows = 0
        if not os.path.isfile(self.metrics_file_path):
            return
        header, rows = _rows_of(self.metrics_file_path)
        self.metrics_keys = sorted(header)
        self.rows = len(rows)
        if header and self._count_lines() != len(rows) + 1:  # a cut row was dropped: rewrite without it
            self._rewrite(rows)

    def _count_lines(self) -> int:
        with open(self.metrics_file_path, "rb") as file:
            data = file.read()
        return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics_dict, step)
        self.save()

    def save(self) -> None:
        """Append the pending rows now (one write per row; a new key rewrites the file first)."""
        if not self.metrics:
            return
        new_keys = set().union(*self.metrics) - set(self.metrics_keys)
        exists = os.path.isfile(self.metrics_file_path)
        if new_keys or not exists:
            self.metrics_keys = sorted(set(self.metrics_keys) | new_keys)
            self._rewrite(_rows_of(self.metrics_file_path)[1] if exists else [])
        fd = os.open(self.metrics_file_path, os.O_WRONLY | os.O_APPEND)
        try:
            for row in self.metrics:
                buffer = io.StringIO()
                csv.DictWriter(buffer, fieldnames=self.metrics_keys).writerow(row)
                os.write(fd, buffer.getvalue().encode("utf-8"))
                self.rows += 1
            os.fsync(fd)
        finally:
            os.close(fd)
        self.metrics = []

    def drop_rows_after(self, step: int) -> int:
        """Remove the rows whose ``step`` is greater than ``step``; returns how many were removed."""
        if not os.path.isfile(self.metrics_file_path):
            return 0
        rows = _rows_of(self.metrics_file_path)[1]
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) <= step]
        if len(kept) < len(rows):
            self._rewrite(kept)
        return len(rows) - len(kept)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        """The file with ``rows`` under the current header, replacing the old one in one step."""
        tmp = self.metrics_file_path + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.metrics_file_path)
        self.rows = len(rows)


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
        return cast(ExperimentWriter, self._experiment)  # always an AppendingWriter, set here

    def resume_at(self, step: int) -> None:
        """A run resumes from a checkpoint at ``step``: drop the rows logged after it (logged again)."""
        writer = self.experiment
        if isinstance(writer, AppendingWriter):
            dropped = writer.drop_rows_after(step)
            if dropped:
                rank_zero_info(
                    f"{writer.metrics_file_path}: {dropped} rows after step {step} dropped (re-logged)"
                )
