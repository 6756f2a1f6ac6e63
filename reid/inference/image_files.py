"""Which images to embed: a folder (all images under it), a glob pattern, one image, or a list file.

A list file (any file that is not an image) holds one path per line; blank lines and lines starting
with ``#`` are skipped, and a relative path is taken from the list file's folder. Images are the files
ending in ``reid.data.datasets.errors.IMAGE_SUFFIXES`` (any case). Folders and globs are sorted; a list
keeps its order.
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


def images_of_list(list_file: Path) -> list[str]:
    """The paths of a list file, relative ones from its folder; each must be a file."""
    paths: list[str] = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
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
        raise FileNotFoundError(f"{text}: no such folder, image, list file or glob pattern")
    if not paths:
        raise FileNotFoundError(f"{text}: {what}; expected a folder of images, a glob, or a list file")
    return paths
