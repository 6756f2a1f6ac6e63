"""Sweep summary: ``python -m reid.tools.summarize multirun/<task>/<time> [--csv out.csv] [--all]``.

One row per run of a Hydra multirun folder (each job folder holds ``.hydra/overrides.yaml``):
the overridden config values (by default only those that differ between runs), then the run's
``results.json`` test metrics (``test/<target>/<metric>`` for each target of a run that evaluated
several, ``reid.results``), its RPE-triplet diagnostics (:data:`SHOWN_LOGGED`) and the last logged
``val/*`` metrics of its ``csv/metrics.csv``.
Prints a table readable at 80 columns (:func:`terminal_rows`: a row per run and test target, the
varying overrides by short names, mAP / R1 / mINP and the diagnostics a run has); ``--csv`` writes every
column (:func:`table_rows`) to a file.

Report: ``python -m reid.tools.summarize <runs and multirun folders...> --report out.md`` compares
methods and datasets in one markdown table (:func:`report_rows`): a row per run and test target
(experiment, training dataset, target, test mAP / R1 / mINP, which weights were tested) with, where the
run's config has a ``published`` result (``conf/run.yaml``) for that target *and the run trained the
experiment's recipe unchanged*, the paper's numbers and source beside it. A run with overrides that
change the recipe (:func:`recipe_changes`: another model option, lr, batch, epochs, selection=best, ...)
lists them in the ``recipe`` column instead, and gets no published number: it is not that recipe.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reid.dataset_options import compose_dataset_option, dataset_options
from reid.results import by_target

METRIC_ORDER = ("mAP", "R1", "R5", "R10", "mINP")
SHOWN_LOGGED = (
    "train/rpe_triplet/auc", "train/rpe_triplet/collapse", "train/rpe_triplet/diverged_step",
    "val/rpe/auc", "val/rpe/collapse", "test/rpe/auc", "test/rpe/collapse",
)  # fmt: skip
"""Diagnostics of ``results.json``'s ``last_logged`` shown as columns when a run has them: the RPE-triplet
loss's identity information (AUC), collapse and divergence step (docs/rpe.md)."""


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
        logged = data.get("last_logged") or {}
        summary.metrics.update({key: float(logged[key]) for key in SHOWN_LOGGED if key in logged})
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


TERMINAL_METRICS = (("mAP", "mAP"), ("R1", "R1"), ("mINP", "mINP"))
"""Test metrics of the terminal table, per target row: (metric, column name)."""
TERMINAL_EXTRAS = (
    ("val/mAP", "val mAP"), ("test/rpe/auc", "rpe AUC"), ("test/rpe/collapse", "collapse"),
    ("train/rpe_triplet/diverged_step", "diverged"),
)  # fmt: skip
"""Run-level values shown as a column when a run has them (the first target's validation mAP, the
RPE-triplet diagnostics of docs/rpe.md)."""


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its shortest trailing part that no other key of ``keys`` ends with
    (``model.loss.rpe_triplet.form`` -> ``form``)."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if not any(other != key and (other == tail or other.endswith("." + tail)) for other in keys):
                break
        short[key] = tail
    return short


def _targets(run: RunSummary) -> list[str]:
    """The run's test targets: named ones (``test/<target>/mAP``), else the plain ``test/`` one ("")."""
    named = [m.split("/")[1] for m in run.metrics if m.startswith("test/") and m.count("/") == 2]
    named = [t for t in dict.fromkeys(named) if t != "rpe"]
    return named or [""]


def terminal_rows(runs: list[RunSummary], all_overrides: bool = False) -> tuple[list[str], list[list[str]]]:
    """The table printed on the terminal, readable at 80 columns: one row per run and test target
    (``target`` column), the varying overrides in one cell by short names, a few named metric columns;
    :func:`table_rows` (``--csv``) keeps every metric as its own column."""
    keys = list(dict.fromkeys(k for run in runs for k in run.overrides))
    if not all_overrides and len(runs) > 1:
        keys = [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1] or keys
    short = short_keys(keys)
    extras = [(m, name) for m, name in TERMINAL_EXTRAS if any(m in run.metrics for run in runs)]
    header = ["job", "overrides", "target", *(n for _, n in TERMINAL_METRICS), *(n for _, n in extras)]
    header.append("status")
    rows = []
    for run in runs:
        overrides = " ".join(f"{short[k]}={run.overrides[k]}" for k in keys if k in run.overrides)
        for number, target in enumerate(_targets(run)):
            prefix = f"test/{target}/" if target else "test/"
            cells = [
                f"{run.metrics[prefix + m]:.2f}" if prefix + m in run.metrics else ""
                for m, _ in TERMINAL_METRICS
            ]
            first = number == 0
            extra = [f"{run.metrics[m]:.3g}" if first and m in run.metrics else "" for m, _ in extras]
            rows.append(
                [run.job if first else "", overrides if first else "", target or "test", *cells, *extra,
                 run.status if first else ""]
            )  # fmt: skip
    return header, rows


def print_table(header: list[str], rows: list[list[str]], title: str, width: int | None = None) -> None:
    """A rich table whose columns wrap rather than cut their headers (``width``: the console's)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in header:
        numeric = name not in ("job", "overrides", "target", "status")
        wraps = name == "overrides"  # the one free-text column; names and numbers stay whole
        table.add_column(
            name,
            justify="right" if numeric else "left",
            overflow="fold",
            no_wrap=not wraps,
            min_width=len(name),
        )
    for row in rows:
        table.add_row(*row)
    Console(width=width).print(table)


def write_csv(header: list[str], rows: list[list[str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


PUBLISHED_METRICS = ("mAP", "R1", "R5", "mINP")
REPORT_METRICS = ("mAP", "R1", "mINP")


@dataclass(frozen=True)
class Published:
    """A paper's result of a run's recipe: ``metrics`` (a subset of :data:`PUBLISHED_METRICS`, in %)
    on the ``dataset`` option ``dataset``, from ``source``."""

    dataset: str
    metrics: dict[str, float]
    source: str


def published_of(node: object, where: Path) -> Published | None:
    """The config's ``published`` value (``None`` when null); a malformed one names ``where``."""
    if node is None:
        return None
    expected = f"{{dataset, source, and any of {', '.join(PUBLISHED_METRICS)}}}"
    if not isinstance(node, dict):
        raise ValueError(f"{where}: published must be a mapping {expected}, got {node!r}")
    unknown = sorted(set(node) - {"dataset", "source", *PUBLISHED_METRICS})
    metrics = {k: node[k] for k in PUBLISHED_METRICS if k in node}
    if unknown or not metrics or not all(isinstance(node.get(k), str) for k in ("dataset", "source")):
        extra = f" (unknown keys {unknown})" if unknown else ""
        raise ValueError(f"{where}: published {node!r}{extra}: expected {expected}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()):
        raise ValueError(f"{where}: published metrics must be numbers, got {metrics}")
    return Published(node["dataset"], {k: float(v) for k, v in metrics.items()}, node["source"])


@dataclass
class ReportRow:
    """One target of one run: its test metrics, which weights they score, the overrides by which its recipe
    differs from the experiment's, and the paper's numbers when published for that target and recipe."""

    run: str
    experiment: str
    train: str
    target: str
    metrics: dict[str, float]
    published: Published | None = None
    tested: str = ""
    changes: tuple[str, ...] = ()


OUTSIDE_THE_RECIPE = (
    "experiment", "paths.", "hydra.", "data.dataset.root", "data.num_workers", "data.test_batch_size",
    "data.test_datasets", "logger", "callbacks.", "trainer.enable_", "trainer.log_every_n_steps",
    "trainer.check_val_every_n_epoch", "trainer.accelerator", "trainer.precision", "trainer.devices",
    "trainer.num_nodes", "trainer.strategy", "trainer.sync_batchnorm", "trainer", "seed", "task_name",
    "ckpt_path", "overwrite", "model.weights", "train", "test", "evaluate_before_fit", "optimized_metric",
)  # fmt: skip
"""Override keys (exact, or prefixes ending in '.') that leave an experiment's recipe as it is: where the
data and weights live, logging, how often the learning curve is drawn, the seed, the numerics (mixed
precision is a stated difference, docs/recipes.md), extra evaluation targets, and the number of
processes (``trainer=ddp``, ``trainer.devices``: N processes train as one). Everything else changes
what is trained or which weights are reported: another group option (``model=...``), a value
(``model.optimizer.lr``), ``selection=best``."""


def recipe_changes(overrides: list[str]) -> tuple[str, ...]:
    """The overrides of ``overrides`` (``key=value`` as ``.hydra/overrides.yaml`` lists them) that change
    the experiment's recipe (:data:`OUTSIDE_THE_RECIPE`)."""
    changed = []
    for entry in overrides:
        key = str(entry).partition("=")[0].lstrip("+~")
        if not any(key == k or (k.endswith(".") and key.startswith(k)) for k in OUTSIDE_THE_RECIPE):
            changed.append(str(entry))
    return tuple(changed)


def _run_overrides(run_dir: Path) -> tuple[str, ...]:
    """The run's recipe changes; a run without ``.hydra/overrides.yaml`` cannot show it has none."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ("(no .hydra/overrides.yaml: recipe unknown)",)
    return recipe_changes([str(entry) for entry in yaml.safe_load(path.read_text()) or []])


def _tested(summary: dict) -> str:
    """Which weights ``results.json``'s test scored: ``last`` (epoch N), ``best`` (val/mAP), ``ckpt_path``."""
    tested = summary.get("tested_weights") or {}
    if not tested:
        return "best checkpoint (older run)" if summary.get("best_checkpoint") else ""
    selection, epochs = str(tested.get("selection", "")), tested.get("epochs")
    return f"{selection} (epoch {epochs})" if epochs is not None else selection


def _hydra_choices(run_dir: Path) -> dict[str, str]:
    """The group options the run was composed with (``.hydra/hydra.yaml``; absent outside @hydra.main)."""
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return {}
    runtime = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {}).get("runtime", {})
    return {str(k): str(v) for k, v in (runtime.get("choices") or {}).items() if v is not None}


def dataset_name(loader: dict, choices: dict[str, str]) -> str:
    """The ``dataset`` option a run trained on: as Hydra recorded it, else the one option whose
    loader ``_target_`` it has, else the loader's function name without ``load_``."""
    for key in ("data/dataset", "dataset@data.dataset"):  # the group's name since issue 32, and before
        if key in choices:
            return choices[key]
    target = str(loader.get("_target_", ""))
    options = [name for name in dataset_options() if compose_dataset_option(name).get("_target_") == target]
    if len(options) == 1:
        return options[0]
    return target.rpartition(".")[2].removeprefix("load_") or "?"


def _test_datasets(data: dict) -> list[str]:
    names = data.get("test_datasets")
    if isinstance(names, dict):
        return [str(k) for k in names]
    return [str(n) for n in names or []]


def report_rows(run_dir: Path, label: str) -> list[ReportRow]:
    """The rows of one run folder (``.hydra/config.yaml`` and, once tested, ``results.json``)."""
    config_file = run_dir / ".hydra" / "config.yaml"
    cfg = yaml.safe_load(config_file.read_text()) or {}
    if not isinstance(cfg.get("data"), dict):
        raise ValueError(f"{config_file}: expected the config of a reid.run run (no data node)")
    choices = _hydra_choices(run_dir)
    experiment = choices.get("experiment") or str(cfg.get("task_name", "?"))
    train = dataset_name(cfg["data"].get("dataset") or {}, choices)
    published = published_of(cfg.get("published"), config_file)
    changes = _run_overrides(run_dir)
    results = run_dir / "results.json"
    summary = json.loads(results.read_text()) if results.is_file() else {}
    tested = by_target(summary.get("test"))
    if not tested:
        return [ReportRow(label, experiment, train, "(no results.json test)", {}, changes=changes)]
    rows = []
    for target, metrics in tested.items():
        name = target or next(iter(_test_datasets(cfg["data"])), train)
        recipe_published = published is not None and published.dataset == name and not changes
        shown = published if recipe_published else None
        rows.append(ReportRow(label, experiment, train, name, metrics, shown, _tested(summary), changes))
    return rows


def collect_report(paths: list[Path]) -> list[ReportRow]:
    """Every run under each path (a run folder, or any folder above runs: a multirun, an outputs tree)."""
    rows = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(
                f"summarize --report: {path} is not a folder (a run or a multirun folder)"
            )
        runs = sorted({p.parent.parent for p in path.glob("**/.hydra/config.yaml")}, key=_job_order)
        if not runs:
            raise FileNotFoundError(f"summarize --report: no runs (no */.hydra/config.yaml) under {path}")
        for run in runs:
            rows.extend(report_rows(run, str(run)))
    return rows


def _job_order(path: Path) -> tuple[str, float, str]:
    return (str(path.parent), int(path.name) if path.name.isdigit() else math.inf, path.name)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def report_markdown(rows: list[ReportRow]) -> str:
    """The markdown table of :func:`collect_report`'s rows, with the published numbers beside."""
    header = ["run", "experiment", "train", "target", *REPORT_METRICS, "tested", "recipe"]
    header += ["published mAP", "published R1", "source"]
    align = ["---"] * 4 + ["---:"] * 3 + ["---"] * 2 + ["---:"] * 2 + ["---"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        paper = row.published.metrics if row.published is not None else {}
        cells = [
            f"`{row.run}`",
            row.experiment,
            row.train,
            row.target,
            *(_number(row.metrics.get(m)) for m in REPORT_METRICS),
            row.tested,
            "changed: " + ", ".join(f"`{c}`" for c in row.changes) if row.changes else "as the experiment",
            _number(paper.get("mAP")),
            _number(paper.get("R1")),
            row.published.source if row.published is not None else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "Test metrics in %; tested: the weights the test scored (`last`: the last epoch's, as the official "
        "code reports; `best`: chosen on held-out training identities); published: the paper's result for "
        "the experiment's recipe on that target (its config's `published`), shown only beside a run of that "
        "recipe unchanged, – elsewhere."
    )
    return "\n".join([*lines, "", note]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m reid.tools.summarize", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "paths",
        type=Path,
        nargs="+",
        help="a multirun folder, e.g. multirun/reid/2026-01-01_12-00-00; with --report runs and multiruns",
    )
    parser.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    parser.add_argument("--all", action="store_true", help="show every override, not only those that vary")
    parser.add_argument(
        "--report", type=Path, help="write a markdown table of the runs with published results beside"
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        text = report_markdown(collect_report(args.paths))
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
        print(text, end="")
        return
    for sweep_dir in args.paths:
        runs = collect(sweep_dir)
        print_table(*terminal_rows(runs, all_overrides=args.all), title=str(sweep_dir))
        if args.csv is not None:
            write_csv(*table_rows(runs, all_overrides=args.all), args.csv)


if __name__ == "__main__":
    from reid.tools.cli import run_tool

    run_tool(main, "python -m reid.tools.summarize")
