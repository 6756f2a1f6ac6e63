"""Reading a weights file without running its code, and saying what is wrong with one that cannot be read.

``.safetensors`` and ``.npz`` (``allow_pickle=False``) hold arrays only. Anything else is read by
``torch.load(weights_only=True)`` with exactly one class allowed besides tensors and containers:
``argparse.Namespace``, which the official DINO (facebookresearch/dino ``main_dino.py``:
``save_dict = {"student", "teacher", "optimizer", "epoch", "args": args, "dino_loss"}``) and PASS
training scripts store under ``args``; its fields are plain values, so allowing it runs no code.

A file that still cannot be read gets a diagnosis that fits it (empty, truncated or corrupt zip archive,
a text file such as a Git LFS pointer or an HTML page, a pickle holding other objects: named by the
global it asks for), never torch's advice to retry with ``weights_only=False``.
"""

from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)
"""The classes besides tensors a weights file may hold (the ``args`` of DINO / PASS checkpoints)."""

_ALLOWED_NAMES = {f"{cls.__module__}.{cls.__qualname__}" for cls in SAFE_GLOBALS}


def read_checkpoint(path: str | Path) -> Any:
    """The object stored in ``path`` (.safetensors, .npz, or a torch file read weights-only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix == ".npz":
        return _read_npz(path)
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # every failure gets a diagnosis below
        message = f"weights: {path} cannot be read: {diagnose(path, error)}"
    raise ValueError(message)  # outside the except: torch's weights_only=False hint is not chained


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"weights: {path} is not a readable .safetensors file ({error}); {_size_hint(path)}"
        ) from error


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {key: torch.from_numpy(np.array(arrays[key])) for key in arrays.files}
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(
                f"weights: {path} holds pickled Python objects besides arrays; they are not read "
                "(unpickling can run code): save the arrays alone with np.savez"
            ) from error
        raise ValueError(f"weights: {path} is not a readable .npz archive ({error})") from error
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(
            f"weights: {path} is not a readable .npz archive ({error}); {_size_hint(path)}"
        ) from error


def _size_hint(path: Path) -> str:
    size = path.stat().st_size
    return f"the file has {size} bytes: an interrupted download or copy leaves it short; fetch it again"


def diagnose(path: str | Path, error: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed with ``error``, in terms of the file's bytes."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "it is empty (0 bytes): an interrupted download or copy; fetch it again"
    with path.open("rb") as file:
        head = file.read(512)
    if head.startswith(b"PK"):
        return _diagnose_zip(path, size, error)
    if b"\0" not in head and _is_text(head):
        return _diagnose_text(head)
    wanted = _wanted_globals(path, error)
    if wanted:
        return _objects_message(wanted)
    if head[:1] == b"\x80":  # a pickle (torch's legacy format)
        if isinstance(error, EOFError) or "truncated" in str(error):
            return f"it is a truncated pickle ({size} bytes): an interrupted download or copy; fetch it again"
        return f"it is a pickle that is not a torch checkpoint ({_first_sentence(error)})"
    return (
        f"it is not a checkpoint (it starts with bytes {head[:8].hex(' ')}); expected a torch.save archive, "
        ".safetensors or .npz"
    )


def _diagnose_zip(path: Path, size: int, error: BaseException) -> str:
    if not zipfile.is_zipfile(path):
        return (
            f"it is a truncated zip archive ({size} bytes, no central directory at its end): an interrupted "
            "download or copy; fetch it again"
        )
    wanted = _wanted_globals(path, error)
    if wanted:
        return _objects_message(wanted)
    return f"it is a corrupt zip archive ({_first_sentence(error)}); fetch it again"


def _wanted_globals(path: Path, error: BaseException) -> list[str]:
    """The classes/functions the pickle asks for beyond the allowed ones (read without unpickling)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy format: the unpickler's message names the global
        names = re.findall(r"GLOBAL ([\w.]+)", str(error))
    return sorted(set(names) - _ALLOWED_NAMES)


def _objects_message(wanted: list[str]) -> str:
    return (
        f"it holds Python objects besides tensors (it asks for the global {', '.join(wanted)}), which are "
        "not unpickled since unpickling can run code. Where it was written, re-save its tensors alone: "
        "torch.save(ckpt['state_dict'], 'weights.pth') (or safetensors.torch.save_file)"
    )


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start > len(head) - 4  # a character cut by the 512-byte window
    return True


def _diagnose_text(head: bytes) -> str:
    text = head.decode("utf-8", errors="replace")
    if text.startswith("version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights: fetch them with `git lfs pull`"
    if text.lstrip().lower().startswith(("<!doctype", "<html", "<?xml")):
        return "it is an HTML/XML page (a download that returned an error or login page), not the weights"
    first = text.strip().splitlines()[0][:60] if text.strip() else ""
    return f"it is a text file (it starts with {first!r}), not a checkpoint"


def _first_sentence(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0]
