"""Curves of a run: the CMC curve of an evaluation and mAP per epoch, as PNGs of ``FIGURE_SIZE`` pixels.

CMC: ``CMC@n`` (percent) for n = 1..``eval.max_rank``, one line per evaluation target, from
:attr:`reid.evaluation.RankResult.cmc` (fractions over the valid queries). mAP per epoch: the ``val/…mAP``
and ``test/…mAP`` columns of the run's ``csv/metrics.csv``, one line per target (with several targets the
plain ``val/mAP``, a copy of the first target's, is left out). The x axis is training epochs completed:
a validation row is logged at the end of epoch ``epoch`` (0-based, so ``epoch + 1`` are done); a test row
after ``epoch`` completed epochs (``reid.training.epochs``).

Every target has one colour in every curve of a run (:func:`target_colours`); validation and test
series of a target differ by line style and marker. Drawn with matplotlib's object API on an Agg
canvas, so no pyplot state or display is touched.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reid.evaluation.rank import RankResult

FIGURE_SIZE = (640, 400)
"""(width, height) in pixels of every curve picture."""
DPI = 100
MAP_COLUMN = re.compile(r"^(?P<prefix>val|test)(?:/(?P<target>[^/]+))?/mAP$")


TARGET_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
"""Matplotlib's tab10: the colour of the i-th target (by name order) in every curve of a run."""


def target_colours(targets: Sequence[str]) -> dict[str, str]:
    """One colour per target name, the same in every plot of a run: the targets in name order take
    :data:`TARGET_COLOURS` in turn (a run with one target draws it in the first colour everywhere)."""
    return {name: TARGET_COLOURS[i % len(TARGET_COLOURS)] for i, name in enumerate(sorted(set(targets)))}


def series_target(name: str) -> str:
    """The target of a mAP series (``val/<target>/mAP``), ``""`` for the plain first-target one."""
    match = MAP_COLUMN.match(name)
    return (match["target"] or "") if match else name


def _figure() -> Figure:
    figure = Figure(figsize=(FIGURE_SIZE[0] / DPI, FIGURE_SIZE[1] / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.1, right=0.97, bottom=0.13, top=0.91)  # fixed: tight_layout costs 0.2 s
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # no bbox_inches: the size stays FIGURE_SIZE; light compression: a run draws these after every test
    figure.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 1})
    return path


def save_cmc_curve(results: Mapping[str, RankResult], path: str | Path, title: str = "CMC") -> Path:
    """``CMC@n`` against ``n`` for each ``{label: result}``; the legend gives mAP and R1."""
    if not results:
        raise ValueError(f"save_cmc_curve({path}): no evaluation results to draw")
    figure = _figure()
    axes = figure.add_subplot()
    colours = target_colours(list(results))
    for label, result in results.items():
        cmc = [100.0 * float(v) for v in result.cmc]
        ranks = range(1, len(cmc) + 1)
        legend = f"{label}: mAP {100 * result.mAP:.1f}, R1 {cmc[0]:.1f}"
        axes.plot(ranks, cmc, marker="." if len(cmc) <= 20 else None, label=legend, color=colours[label])
    axes.set(xlabel="rank n", ylabel="CMC@n (%)", title=title, ylim=(0, 101))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return _save(figure, Path(path))


def read_map_history(metrics_csv: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{"val/mAP" | "val/<target>/mAP" | "test/…": [(epochs completed, mAP), ...]}`` from a run's
    ``csv/metrics.csv``, in row order; empty cells skipped, a missing file an error naming it."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"{metrics_csv}: no metrics file (a run's csv/metrics.csv, logger=csv)")
    with metrics_csv.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [name for name in reader.fieldnames or () if MAP_COLUMN.match(name)]
        if "epoch" not in (reader.fieldnames or ()):
            raise ValueError(f"{metrics_csv}: no 'epoch' column; expected a Lightning CSVLogger metrics file")
        history: dict[str, list[tuple[int, float]]] = {name: [] for name in columns}
        for row in reader:
            for name in columns:
                value = row.get(name) or ""
                if value.strip() and row.get("epoch", "").strip():
                    epoch = int(float(row["epoch"])) + (1 if name.startswith("val/") else 0)
                    history[name].append((epoch, float(value)))
    return without_plain_copies(history)


def without_plain_copies(history: Mapping[str, Sequence[tuple[int, float]]]) -> dict[str, list]:
    """``history`` without empty series and, for a stage with per-target series, without its plain
    ``<stage>/mAP`` (a copy of the first target's)."""
    columns = {name: _map_column(name) for name in history}
    targeted = {column["prefix"] for column in columns.values() if column["target"]}
    return {
        name: list(points)
        for name, points in history.items()
        if points and not (columns[name]["target"] is None and name.split("/")[0] in targeted)
    }


def _map_column(name: str) -> re.Match[str]:
    match = MAP_COLUMN.match(name)
    if match is None:
        raise ValueError(f"{name!r} is no mAP series name (val/mAP, test/<target>/mAP, ...)")
    return match


def save_map_curve(
    history: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, title: str = "mAP per epoch"
) -> Path:
    """mAP against epochs completed, one line per series of :func:`read_map_history` (test points marked)."""
    series = {name: points for name, points in history.items() if points}
    if not series:
        raise ValueError(f"save_map_curve({path}): no mAP values to draw")
    figure = _figure()
    axes = figure.add_subplot()
    colours = target_colours([series_target(name) for name in series])
    for name, points in series.items():
        epochs, values = zip(*points, strict=True)
        test = name.startswith("test/")
        axes.plot(
            epochs, values, label=name, color=colours[series_target(name)],
            marker="s" if test else "o", linestyle=":" if test else "-",
        )  # fmt: skip
    top = max(value for points in series.values() for _, value in points if math.isfinite(value))
    axes.set(xlabel="epochs completed", ylabel="mAP (%)", title=title, ylim=(0, max(5.0, 1.1 * top)))
    locator = axes.xaxis.get_major_locator()  # matplotlib's AutoLocator, a MaxNLocator
    if isinstance(locator, MaxNLocator):
        locator.set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, Path(path))
