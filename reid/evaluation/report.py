"""The final metrics table (rich) and its JSON record, for the end of validation/test."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from reid.evaluation.rank import RankResult


def results_table(
    result: RankResult, title: str = "ReID evaluation", ranks: Sequence[int] = (1, 5, 10)
) -> Table:
    """One row: mAP, R1, R5, R10, mINP in percent, and the query counts."""
    metrics = result.as_dict(ranks)
    table = Table(title=title)
    for name in metrics:
        table.add_column(name, justify="right")
    table.add_column("queries (valid / all)", justify="right")
    table.add_row(
        *(f"{value:.2f}" for value in metrics.values()), f"{result.num_valid_queries} / {result.num_queries}"
    )
    return table


def print_results(
    result: RankResult,
    title: str = "ReID evaluation",
    ranks: Sequence[int] = (1, 5, 10),
    console: Console | None = None,
) -> None:
    (console or Console()).print(results_table(result, title, ranks))


def results_record(
    result: RankResult, ranks: Sequence[int] = (1, 5, 10), extra: Mapping[str, Any] | None = None
) -> dict:
    """JSON-ready dict: the metrics in percent, the query counts, the whole CMC curve and ``extra``."""
    return {
        **result.as_dict(ranks),
        "num_queries": result.num_queries,
        "num_valid_queries": result.num_valid_queries,
        "cmc": [100.0 * float(v) for v in result.cmc],
        **dict(extra or {}),
    }


def write_json(
    result: RankResult,
    path: str | Path,
    ranks: Sequence[int] = (1, 5, 10),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write :func:`results_record` to ``path`` (parents created), e.g. beside the checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results_record(result, ranks, extra), indent=2) + "\n")
    return path
