"""Errors for malformed datasets, and the small checks every parser shares.

Every message names the dataset, the path (and the line or value where there is one) and what
layout was expected, so a user can fix the tree without reading parser code:

    Market-1501 root /x/y has no 'bounding_box_train' folder; expected
    <root>/{bounding_box_train,query,bounding_box_test} (found: a.txt, foo/)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
"""File suffixes (lower case) treated as images when a folder is listed."""

_MAX_LISTED = 10


class DatasetError(Exception):
    """Base class of every dataset parsing error."""


class DatasetLayoutError(DatasetError, FileNotFoundError):
    """A root, split folder or list file is missing, or a split holds no images."""


class DatasetFormatError(DatasetError, ValueError):
    """A file name, list line or label value does not have the documented format or range."""


def describe_contents(folder: Path) -> str:
    """A short listing of ``folder`` for error messages: ``a.txt, foo/, ... (+12 more)``."""
    if not folder.is_dir():
        return "not a folder" if folder.exists() else "does not exist"
    names = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(folder))
    if not names:
        return "empty"
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f", ... (+{more} more)" if more > 0 else "")


def _expected(required: Sequence[str]) -> str:
    if len(required) == 1:
        return f"<root>/{required[0]}"
    return "<root>/{" + ",".join(required) + "}"


def resolve_root(
    root: str | Path, dataset: str, official_names: Sequence[str], required: Sequence[str]
) -> Path:
    """Find the dataset folder: ``root`` itself or ``root/<official name>``, holding ``required``.

    Raises:
        DatasetLayoutError: if ``root`` does not exist, or neither ``root`` nor any
            ``root/<official name>`` holds every entry of ``required``.
    """
    root = Path(root).expanduser().absolute()  # records keep absolute paths: a later chdir is harmless
    if not root.is_dir():
        parent = f" or its parent holding one of {list(official_names)}" if official_names else ""
        raise DatasetLayoutError(
            f"{dataset} root {root} does not exist or is not a folder; expected a folder laid out as "
            f"{_expected(required)}{parent}{_data_dir_hint(root, required)}"
        )
    candidates = [root, *(root / name for name in official_names)]
    for candidate in candidates:
        if all((candidate / entry).exists() for entry in required):
            return candidate
    # Report against the deepest folder the user most likely meant.
    target = next((root / n for n in official_names if (root / n).is_dir()), root)
    missing = next(entry for entry in required if not (target / entry).exists())
    raise DatasetLayoutError(
        f"{dataset} root {target} has no '{missing}'; expected {_expected(required)} "
        f"(found: {describe_contents(target)})"
    )


def _data_dir_hint(root: Path, required: Sequence[str]) -> str:
    """When ``root``'s parent is itself the dataset (``paths.data_dir`` set to the dataset folder instead
    of the folder holding it), say which key to set."""
    folder = root.parent
    if not required or not all((folder / entry).exists() for entry in required):
        return ""
    return (
        f". {folder} is itself the dataset folder: paths.data_dir names the folder that holds the datasets, "
        f"so set paths.data_dir={folder.parent} (or data.dataset.root={folder})"
    )


def require_folder(folder: Path, dataset: str, role: str) -> Path:
    """Return ``folder`` if it is a directory, else raise naming ``role`` (e.g. 'query split')."""
    if not folder.is_dir():
        raise DatasetLayoutError(
            f"{dataset} {role} folder {folder} does not exist (found in {folder.parent}: "
            f"{describe_contents(folder.parent)})"
        )
    return folder


def require_file(path: Path, dataset: str, role: str) -> Path:
    """Return ``path`` if it is a regular file, else raise naming ``role`` (e.g. 'train list')."""
    if not path.is_file():
        raise DatasetLayoutError(
            f"{dataset} {role} file {path} does not exist (found in {path.parent}: "
            f"{describe_contents(path.parent)})"
        )
    return path


def _folder_key(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def list_images(folder: Path, dataset: str, recursive: bool = False) -> list[str]:
    """Sorted paths (strings) of the image files of ``folder``, by name only: nothing is decoded.

    Non-image files (e.g. ``Thumbs.db`` in the Market-1501 release) are ignored. Strings rather
    than ``Path`` objects because ``pathlib`` costs seconds per million files.

    Raises:
        DatasetLayoutError: if ``folder`` is missing or holds no image.
        DatasetFormatError: if a folder in a non-recursive split is named like an image (``x.jpg/``),
            which would otherwise be skipped without a word; if a recursive walk reaches a folder twice
            through a symbolic link (a loop would recurse until the OS refuses the path).
    """
    require_folder(folder, dataset, "image")
    found: list[str] = []
    stack = [str(folder)]
    listed = {_folder_key(os.stat(folder))}  # folders reached, by device and inode (links followed)
    while stack:
        for entry in os.scandir(stack.pop()):
            if entry.is_dir():
                if recursive:
                    key = _folder_key(entry.stat())
                    if key in listed:
                        raise DatasetFormatError(
                            f"{dataset} tree {folder}: {entry.path} links to {os.path.realpath(entry.path)}, "
                            "a folder already listed (a symlink loop, or a second link to the same folder "
                            "that would list its images twice); remove the link"
                        )
                    listed.add(key)
                    stack.append(entry.path)
                elif entry.name.lower().endswith(IMAGE_SUFFIXES):
                    raise DatasetFormatError(
                        f"{dataset} split {folder} holds a folder named like an image: {entry.path}/ "
                        "(an extracted archive or a copy gone wrong?); move its images into the split or "
                        "remove it"
                    )
            elif entry.name.lower().endswith(IMAGE_SUFFIXES):
                found.append(entry.path)
    if not found:
        where = "under" if recursive else "in"
        raise DatasetLayoutError(
            f"{dataset} split {folder} is empty: no image ({', '.join(IMAGE_SUFFIXES)}) {where} it "
            f"(found: {describe_contents(folder)})"
        )
    return sorted(found)


def check_range(value: int, low: int, high: int, what: str, source: str | Path, dataset: str) -> int:
    """Return ``value`` if ``low <= value <= high``, else raise naming ``source`` (a file or line)."""
    if not low <= value <= high:
        raise DatasetFormatError(f"{dataset} {what} {value} out of range [{low}, {high}] in {source}")
    return value


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty, stripped lines of a text list file with their 1-based line numbers."""
    with path.open(encoding="utf-8") as handle:
        return [(n, line.strip()) for n, line in enumerate(handle, start=1) if line.strip()]
