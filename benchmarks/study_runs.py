"""Running and reading the CPU studies' training runs (``rpe_study.py``, ``cross_domain_study.py``).

A study trains each (variant, seed) as a subprocess of ``python -m reid.run`` in its own folder
``<out>/<variant>/seed<k>``, ``parallel`` at a time with the CPU threads split between them, then reads
every run's ``csv/metrics.csv`` (per-step logs) and ``results.json`` (final test metrics).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Series = dict[str, tuple[list[int], list[float]]]
"""A metrics.csv column -> (steps, values), rows where it is empty skipped."""


@dataclass(frozen=True)
class Job:
    """One training run of a study: its variant, seed, folder and ``reid.run`` overrides."""

    variant: str
    seed: int
    folder: Path
    overrides: tuple[str, ...]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "reid.run", *self.overrides, f"hydra.run.dir={self.folder}"]


def run_dir(out: Path, variant: str, seed: int) -> Path:
    return out / variant / f"seed{seed}"


def train_all(jobs: Sequence[Job], parallel: int, threads: int, data: Path | None = None) -> None:
    """Run ``jobs`` ``parallel`` at a time, each on ``threads`` CPU threads; ``data`` is the data root
    (``REID_DATA``) every run shares. Each job starts in an emptied folder (the CSV logger appends)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if data is not None:
        env["REID_DATA"] = str(data.resolve())
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            shutil.rmtree(job.folder, ignore_errors=True)
            job.folder.mkdir(parents=True)
            log = (job.folder / "stdout.log").open("w")
            print(f"start {job.variant} seed {job.seed} -> {job.folder}", flush=True)
            proc = subprocess.Popen(job.command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            running.append((proc, job, time.time(), log))
        time.sleep(2)
        for entry in list(running):
            proc, job, started, log = entry
            if proc.poll() is not None:
                log.close()
                running.remove(entry)
                took = time.time() - started
                print(f"done {job.variant} seed {job.seed}: rc {proc.returncode}, {took:.0f} s", flush=True)


def read_metrics(path: Path) -> Series:
    """Every column of a Lightning CSV log as ``(steps, values)``, rows where it is empty skipped."""
    series: Series = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = row.get("step", "")
            if step == "":
                continue
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                steps, values = series.setdefault(key, ([], []))
                steps.append(int(float(step)))
                values.append(float(value))
    return series


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
