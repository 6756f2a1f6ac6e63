"""The ``--device`` of the tools: ``cpu``, ``cuda`` or ``cuda:N``, checked before anything is loaded."""

from __future__ import annotations

import torch


def parse_device(text: str) -> torch.device:
    """``text`` as a torch device the machine has; anything else is an error naming the value and the
    devices there are."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {text}: expected cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {text}: expected cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {text}: no CUDA device is available here; use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"--device {text}: this machine has {count} CUDA devices (cuda:0..cuda:{count - 1})"
            )
    return device


__all__ = ["parse_device"]
