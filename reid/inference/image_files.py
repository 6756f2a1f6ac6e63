"""Which images to embed: a folder (all images under it), a glob pattern, one image, or a list file.

A list file (a text file that is not an image) holds one path per line; blank lines and lines starting
with ``#`` are skipped, and a relative path is taken from the list file's folder. A file that is neither
(a ``.npy`` array, a ``.zip``, any binary) is refused saying what it is and what was expected. Images
are the files ending in ``reid.data.datasets.errors.IMAGE_SUFFIXES`` (any case). Folders and globs are
sorted; a list keeps its order. Paths are returned absolute, so an index written from them works from
any folder.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from reid.data.datasets.errors import IMAGE_SUFFIXES

GLOB_CHARACTERS = "*?["


def is_image_file(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def images_under(folder: Path) -> list[str]:
    """Every image file under ``folder`` (any depth), sorted."""
    found = [
        os.path.join(root, name)
        for root, _, names in os.walk(folder, followlinks=True)
        for name in names
        if is_image_file(name)
    ]
    return sorted(found)


EXPECTED = "expected a folder of images, an image, a glob pattern (quoted) or a text file listing image paths"

_KNOWN_BINARIES = (
    (b"\x93NUMPY", "a NumPy array (.npy)", "a features file of reid.tools.extract is a search --gallery"),
    (b"PK\x03\x04", "a zip archive", "extract it and give the folder"),
    (b"\x1f\x8b", "a gzip archive", "extract it and give the folder"),
    (b"\x80", "a Python pickle (a checkpoint?)", ""),
)


def _list_text(list_file: Path) -> str:
    """The text of a list file; a binary file is an error saying what it is."""
    data = list_file.read_bytes()
    what, advice = next(
        ((name, hint) for magic, name, hint in _KNOWN_BINARIES if data.startswith(magic)), ("", "")
    )
    if not what:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            what = "a binary file"
    raise ValueError(
        f"{list_file}: this is {what}, not an image or a list of image paths; {EXPECTED}"
        + (f" ({advice})" if advice else "")
    )


def images_of_list(list_file: Path) -> list[str]:
    """The paths of a list file, relative ones from its folder; each must be a file."""
    paths: list[str] = []
    for number, line in enumerate(_list_text(list_file).splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        path = Path(text) if Path(text).is_absolute() else list_file.parent / text
        if not path.is_file():
            raise FileNotFoundError(f"{list_file}:{number}: {text!r} is not a file ({path})")
        paths.append(str(path))
    return paths


def collect_images(source: str | Path) -> list[str]:
    """The image paths ``source`` names (module docstring); none is an error naming ``source``."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        paths, what = images_under(path), f"no image ({', '.join(IMAGE_SUFFIXES)}) under the folder"
    elif path.is_file():
        paths = [text] if is_image_file(path) else images_of_list(path)
        what = "no path in the list file"
    elif any(c in text for c in GLOB_CHARACTERS):
        paths = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        what = "no file matches the pattern"
    else:
        raise FileNotFoundError(f"{text}: no such folder, image, list file or glob pattern; {EXPECTED}")
    if not paths:
        raise FileNotFoundError(f"{text}: {what}; {EXPECTED}")
    return [os.path.abspath(p) for p in paths]
