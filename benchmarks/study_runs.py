"""Running and reading the CPU studies' training runs (``rpe_study.py``, ``cross_domain_study.py``).

A study trains each (variant, seed) as a subprocess of ``python -m reid.run`` in its own folder
``<out>/<variant>/seed<k>``, ``parallel`` at a time with the CPU threads split between them, then reads
every run's ``csv/metrics.csv`` (per-step logs) and ``results.json`` (final test metrics).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from doc_section import write_section

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


def placeholder_overrides(common: Sequence[str]) -> str:
    """A study's shared ``reid.run`` overrides, as built for seed 0 and 0 epochs, with the seed and the
    epochs written as ``<k>`` and ``<epochs>`` for the report."""
    return " ".join(common).replace("seed=0", "seed=<k>").replace("max_epochs=0", "max_epochs=<epochs>", 1)


def reproducing_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` without what does not change the table: the table lists every variant's finished runs,
    so ``--variants`` (a subset trained this time), ``--report-only`` and ``--rerun`` are left out."""
    kept, skipping = [], False
    for arg in argv:
        if arg.startswith("--"):
            skipping = arg == "--variants"
            if skipping or arg in ("--report-only", "--rerun"):
                continue
        if not skipping:
            kept.append(arg)
    return kept


def write_report(
    section: str, doc: Path, script: str, argv: Sequence[str], shared: str, per_variant: str, table: str
) -> str:
    """The report a study writes into its ``section`` of ``doc`` (and prints): the command that makes
    its table (:func:`reproducing_argv`), the overrides of every run (``shared``) and of each variant
    (``per_variant``, a markdown list), the table."""
    body = "\n\n".join(
        [
            f"Command: `python benchmarks/{script} {' '.join(reproducing_argv(argv))}`".rstrip(),
            f"Per-run overrides (besides `{shared}`):\n{per_variant}",
            table,
        ]
    )
    write_section(section, body, doc)
    print(body)
    return body


def add_study_arguments(
    parser: argparse.ArgumentParser, epochs: int, out: Path, variants: Sequence[str]
) -> None:
    """The command-line options every CPU study shares."""
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs per run (default {epochs})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time; the CPU threads are split")
    parser.add_argument("--reuse-data", type=Path, default=None, help="data root (REID_DATA) shared by runs")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--variants", nargs="+", default=list(variants))
    parser.add_argument("--rerun", action="store_true", help="retrain runs that already have results.json")
    parser.add_argument("--report-only", action="store_true", help="read the runs and write the doc only")


def threads_per_job(jobs: int) -> int:
    """CPU threads for each of ``jobs`` runs at a time."""
    return max(1, (os.cpu_count() or 2) // max(1, jobs))
