"""The benchmarks' CPU memory figures: this process's resident set on Linux, from /proc/self/status.

:func:`reset_peak_rss` moves the high-water mark (VmHWM) down to the current resident set (writing 5 to
/proc/self/clear_refs) and returns that mark; :func:`peak_rss` reads the mark later. The peak since the
reset is therefore never below what the reset returned. Sizes are bytes.
"""

from __future__ import annotations

from pathlib import Path


def status_bytes(field: str) -> int:
    """The ``field`` line of /proc/self/status (``"VmRSS:"``, ``"VmHWM:"``: kB there) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss() -> int:
    """Reset the high-water mark to the current resident set; returns that mark."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_bytes("VmHWM:")


def peak_rss() -> int:
    """The resident high-water mark since the last :func:`reset_peak_rss` (or the process start)."""
    return status_bytes("VmHWM:")
