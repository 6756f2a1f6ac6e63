"""Sweep summary: ``python -m reid.tools.summarize multirun/<task>/<time> [--csv out.csv] [--all]``.

One row per run of a Hydra multirun folder (each job folder holds ``.hydra/overrides.yaml``):
the overridden config values (by default only those that differ between runs), then the run's
``results.json`` test metrics (``test/<target>/<metric>`` for each target of a run that evaluated
several, ``reid.results``) and the last logged ``val/*`` metrics of its ``csv/metrics.csv``.
Prints a rich table; ``--csv`` also writes the rows to a file.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reid.results import by_target

METRIC_ORDER = ("mAP", "R1", "R5", "R10", "mINP")


@dataclass
class RunSummary:
    """One job of a sweep: its folder, overrides (``key -> value`` text) and metrics."""

    job: str
    overrides: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "ok"


def _parse_overrides(path: Path) -> dict[str, str]:
    entries = yaml.safe_load(path.read_text()) or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of 'key=value' overrides, got {type(entries).__name__}")
    parsed = {}
    for entry in entries:
        key, sep, value = str(entry).partition("=")
        if not sep:
            raise ValueError(f"{path}: override {entry!r} is not of the form key=value")
        parsed[key.lstrip("+~")] = value
    return parsed


def _last_logged(metrics_csv: Path, prefix: str) -> dict[str, float]:
    """The last non-empty value of every ``prefix*`` column of a Lightning CSVLogger file."""
    found: dict[str, float] = {}
    with metrics_csv.open(newline="") as file:
        for row in csv.DictReader(file):
            for key, value in row.items():
                if key and key.startswith(prefix) and value not in ("", None):
                    found[key] = float(value)
    return found


def summarize_run(job_dir: Path) -> RunSummary:
    """Read one job folder; a run without results is reported with status 'no results'."""
    summary = RunSummary(job=job_dir.name, overrides=_parse_overrides(job_dir / ".hydra" / "overrides.yaml"))
    results = job_dir / "results.json"
    if results.is_file():
        data = json.loads(results.read_text())
        for target, metrics in by_target(data.get("test")).items():
            prefix = f"test/{target}/" if target else "test/"
            summary.metrics.update({f"{prefix}{key}": value for key, value in metrics.items()})
    for metrics_csv in sorted(job_dir.glob("**/metrics.csv")):
        summary.metrics.update(_last_logged(metrics_csv, "val/"))
    if not summary.metrics:
        summary.status = "no results"
    return summary


def collect(sweep_dir: Path) -> list[RunSummary]:
    """Every job folder under ``sweep_dir`` (those with ``.hydra/overrides.yaml``), in job order."""
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"summarize: sweep folder {sweep_dir} does not exist")
    jobs = sorted(
        (p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml")),
        key=lambda p: (int(p.name) if p.name.isdigit() else math.inf, str(p)),
    )
    if not jobs:
        raise FileNotFoundError(f"summarize: no runs (no */.hydra/overrides.yaml) under {sweep_dir}")
    return [summarize_run(job) for job in jobs]


def _metric_key(name: str) -> tuple[int, str, int, str]:
    """Order of the metric columns: val before test, the plain (first target's) names before
    ``<stage>/<target>/...``, then mAP, R1, R5, R10, mINP, the rest."""
    stage, _, rest = name.partition("/")
    target, _, metric = rest.rpartition("/")
    rank = METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER)
    return (0 if stage == "val" else 1, target, rank, name)


def table_rows(runs: list[RunSummary], all_overrides: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and text rows: job, overrides (varying ones unless ``all_overrides``), metrics, status."""
    keys = list(dict.fromkeys(k for run in runs for k in run.overrides))
    if not all_overrides and len(runs) > 1:
        keys = [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1] or keys
    metrics = sorted({m for run in runs for m in run.metrics}, key=_metric_key)
    header = ["job", *keys, *metrics, "status"]
    rows = []
    for run in runs:
        values = [f"{run.metrics[m]:.2f}" if m in run.metrics else "" for m in metrics]
        rows.append([run.job, *(run.overrides.get(k, "") for k in keys), *values, run.status])
    return header, rows


def print_table(header: list[str], rows: list[list[str]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="right" if "/" in name else "left")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def write_csv(header: list[str], rows: list[list[str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m reid.tools.summarize", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "sweep_dir", type=Path, help="a multirun folder, e.g. multirun/reid/2026-01-01_12-00-00"
    )
    parser.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    parser.add_argument("--all", action="store_true", help="show every override, not only those that vary")
    args = parser.parse_args(argv)
    header, rows = table_rows(collect(args.sweep_dir), all_overrides=args.all)
    print_table(header, rows, title=str(args.sweep_dir))
    if args.csv is not None:
        write_csv(header, rows, args.csv)


if __name__ == "__main__":
    main()
