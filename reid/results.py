"""The layout of the ``results.json`` a run writes (``reid.run``), for its readers
(``reid.tools.summarize``, ``benchmarks/*``).

``"test"`` (and ``"untrained"``, with ``evaluate_before_fit``) is ``{metric: value}`` when the run
evaluates one target (``data.test_datasets`` unset or of one entry), and ``{target: {metric: value}}``,
one entry per target in evaluation order, when it evaluates several.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def by_target(metrics: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """``{target: {metric: value}}`` of either layout; a one-target result is ``{"": {metric: value}}``."""
    if not metrics:
        return {}
    if all(isinstance(value, Mapping) for value in metrics.values()):
        return {str(target): {k: float(v) for k, v in values.items()} for target, values in metrics.items()}
    return {"": {key: float(value) for key, value in metrics.items()}}


def first_target(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """The first target's ``{metric: value}`` (the one plain ``test/mAP`` logs), of either layout."""
    return next(iter(by_target(metrics).values()), {})
