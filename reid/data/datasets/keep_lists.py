"""Keep-lists: which images of a pretraining set to train on, in order (CFS, TransReID-SSL Sec. 3.2).

Two formats, chosen by the file's suffix:

* text (any other suffix): one image path per line, ``#`` lines ignored; what
  ``python -m reid.tools.cfs_filter`` writes;
* pickle (``.pkl``, ``.pickle``): the official ``CFS_list.pkl`` of TransReID-SSL, a pickled list of image
  names ordered by CFS score, of which ``dino/main_dino.py`` keeps the first ``--keep_num`` (2,508,146
  for the published models) and joins them to ``<data_path>/images``.

A pickle can run any code while it loads. This one is read by :class:`StringListUnpickler`, which refuses
every global and persistent id (so no class, function or ``__reduce__`` callable is ever looked up,
let alone called) and then accepts only a list or tuple of strings: what the official file holds. Any
other content is an error naming the file and what was found. ``keep_num`` keeps the first N entries of
either format, as ``save_list[:keep_num]``.
"""

from __future__ import annotations

import io
import pickle
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reid.data.datasets.errors import DatasetFormatError

PICKLE_SUFFIXES = (".pkl", ".pickle")


class StringListUnpickler(pickle.Unpickler):
    """An unpickler that builds only pickle's own containers and strings: a global (a class, a function,
    the callable of a ``__reduce__``) or a persistent id is refused before anything is looked up."""

    def __init__(self, file: io.BufferedReader, source: Path) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        raise DatasetFormatError(
            f"keep-list {self.source}: the pickle asks for {module}.{name}; a keep-list pickle may hold only "
            "a list or tuple of image names (str), so it was not loaded"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise DatasetFormatError(
            f"keep-list {self.source}: the pickle holds a persistent id ({pid!r}); expected a list or tuple "
            "of image names (str)"
        )


def read_pickled_names(path: Path) -> list[str]:
    """The names of a pickled list (or tuple) of strings, else an error naming ``path`` and what it holds."""
    try:
        with path.open("rb") as handle:
            names = StringListUnpickler(handle, path).load()
    except DatasetFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as error:
        raise DatasetFormatError(
            f"keep-list {path}: not a readable pickle ({type(error).__name__}: {error}); expected the "
            "pickled list of image names of TransReID-SSL's CFS_list.pkl"
        ) from error
    if not isinstance(names, list | tuple):
        raise DatasetFormatError(
            f"keep-list {path}: the pickle holds a {type(names).__name__}; expected a list or tuple of image "
            "names (str)"
        )
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise DatasetFormatError(
                f"keep-list {path}: entry {index} is a {type(name).__name__} ({name!r:.60}); expected every "
                "entry to be an image name (str)"
            )
    return list(names)


@dataclass(frozen=True)
class KeepList:
    """The entries of a keep-list file in order; ``lines`` their 1-based line numbers (text files)."""

    source: Path
    entries: list[str]
    lines: np.ndarray | None = None

    def where(self, index: int) -> str:
        """Entry ``index`` located for a message: ``file:line`` (text) or ``file[index]`` (pickle)."""
        return f"{self.source}:{self.lines[index]}" if self.lines is not None else f"{self.source}[{index}]"


def _read_text(path: Path) -> KeepList:
    """Non-blank, non-``#`` lines, stripped, and their line numbers (an int32 array, not 4M tuples)."""
    entries: list[str] = []
    lines = array("i")
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                line = line.strip()
                if line and not line.startswith("#"):
                    entries.append(line)
                    lines.append(number)
    except UnicodeDecodeError as error:
        raise DatasetFormatError(f"keep-list {path}: not a UTF-8 text file ({error})") from error
    return KeepList(path, entries, np.frombuffer(lines, dtype=np.int32))


def read_keep_list_file(path: Path, keep_num: int | None = None) -> KeepList:
    """The keep-list ``path`` (text or pickle, by suffix), the first ``keep_num`` entries when given."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        found = KeepList(path, read_pickled_names(path))
    else:
        found = _read_text(path)
    if keep_num is None:
        return found
    if isinstance(keep_num, bool) or not isinstance(keep_num, int) or keep_num < 1:
        raise DatasetFormatError(f"data.dataset.keep_num={keep_num!r}: expected an integer >= 1 or null")
    if keep_num > len(found.entries):
        raise DatasetFormatError(
            f"data.dataset.keep_num={keep_num}: the keep-list {path} holds only {len(found.entries)} entries"
        )
    lines = None if found.lines is None else found.lines[:keep_num]
    return KeepList(path, found.entries[:keep_num], lines)
