"""Checks of datamodule settings: each failure names the config key (``data.<key>``), the value and what
was expected, before any file is read. Types are checked at compose time by the group schema
(``reid.config_store``); these hold the ranges, also for a datamodule built in Python."""

from __future__ import annotations

from collections.abc import Sequence


def require_int(key: str, value: object, low: int, meaning: str = "") -> int:
    """``value`` as an integer ``>= low``, else a ValueError naming ``data.<key>``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"data.{key}={value!r}: expected {what}{f' ({meaning})' if meaning else ''}")
    return value


def require_image_size(key: str, value: Sequence[int]) -> tuple[int, int]:
    """``[height, width]`` as two positive integers, else a ValueError naming ``data.<key>``."""
    size = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"data.{key}={size!r}: expected [height, width]: two positive integers")
    return size[0], size[1]
