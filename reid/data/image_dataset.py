"""A torch Dataset over :class:`~reid.data.records.Record` lists: decode, transform, label.

Images are read upright (an EXIF orientation tag is applied, as phone and camera JPEGs need) and
16-bit grayscale (``I;16``, ``I``) is scaled to 8 bits before the RGB conversion, which would
otherwise clip every value above 255 to white. :func:`check_image_headers` reads only the headers
of a split (size and mode, no pixel data) so that unreadable files fail at setup, by path;
:func:`decode_images` decodes a split's pixels in parallel (evaluation sets, whose images are otherwise
first read after training).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from reid.data.record_table import RecordTable
from reid.data.records import Record

_WIDE_GRAYSCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}
"""Integer grayscale modes and the white level they are scaled from (16-bit PNG/TIFF)."""

_MAX_LISTED = 5


class ImageReadError(OSError):
    """An image file that is missing, truncated or not an image; the message names the path."""


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` upright and as 8-bit RGB; 16-bit grayscale is scaled (``v * 255 / 65535``), not clipped."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_GRAYSCALE:
        values = np.asarray(image, dtype=np.float64) * (255.0 / _WIDE_GRAYSCALE[image.mode])
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def read_image(path: str) -> Image.Image:
    """Decode ``path`` as upright RGB, failing with the path in the message."""
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except FileNotFoundError as error:
        raise ImageReadError(f"image file not found: {path}") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageReadError(f"cannot decode image {path}: {error} (corrupt or not an image?)") from error


def _header_problem(path: str) -> tuple[str | None, tuple[int, int] | None]:
    """``(problem, None)`` for an unreadable file, else ``(None, (width, height))`` from its header."""
    try:
        with Image.open(path) as image:
            return None, image.size
    except IsADirectoryError:
        return f"{path} (a folder, not an image file)", None
    except FileNotFoundError:
        return f"{path} (not found)", None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            return f"{path} (empty: 0 bytes)", None
        return f"{path} (not an image: {error})", None


def _listed(items: Sequence[str]) -> str:
    more = f"; ... (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return "; ".join(items[:_MAX_LISTED]) + more


PARALLEL_HEADER_CHECK = 20_000
"""From this many images the header check runs in worker processes."""


def _header_findings(paths: Sequence[str], min_side: int) -> tuple[list[str], list[str]]:
    """``(unreadable, small)`` of ``paths`` (see :func:`check_image_headers`)."""
    unreadable: list[str] = []
    small: list[str] = []
    for path in paths:
        problem, size = _header_problem(path)
        if problem is not None:
            unreadable.append(problem)
        elif size is not None and min(size) < min_side:
            small.append(f"{path} ({size[0]}x{size[1]})")
    return unreadable, small


def check_image_headers(
    paths: Sequence[str], split: str, min_side: int = 1, workers: int | None = None
) -> list[str]:
    """Open every file's header (size only, no pixels): raise :class:`ImageReadError` naming each file
    that is not a readable image (zero bytes, not an image, a folder); return the images with a side
    shorter than ``min_side`` pixels, as ``"path (WxH)"``. From :data:`PARALLEL_HEADER_CHECK` images the
    files are split over ``workers`` forked processes (default: the CPU count; parsing a header is Python
    code that holds the GIL, so threads would not help), with a progress bar."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    if len(paths) < PARALLEL_HEADER_CHECK or workers < 2:
        unreadable, small = _header_findings(paths, min_side)
    else:
        size = max(1_000, -(-len(paths) // (workers * 8)))
        chunks = [paths[start : start + size] for start in range(0, len(paths), size)]
        unreadable, small = [], []
        bar = tqdm(total=len(paths), desc=f"checking {split} images", unit="img")
        context = multiprocessing.get_context("fork")  # as DataLoader workers: nothing is re-imported
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for chunk, (bad, tiny) in zip(
                chunks, pool.map(_header_findings, chunks, [min_side] * len(chunks)), strict=True
            ):
                unreadable += bad
                small += tiny
                bar.update(len(chunk))
        bar.close()
    if unreadable:
        raise ImageReadError(
            f"{len(unreadable)} of {len(paths)} {split} images cannot be read: {_listed(unreadable)}; "
            "remove or replace them (or re-extract the dataset)"
        )
    return small


def decode_images(paths: Sequence[str], split: str, workers: int | None = None) -> None:
    """Decode every file's pixels (threads: Pillow's decoders release the GIL): raise
    :class:`ImageReadError` naming each file whose header reads but whose data does not (a truncated
    JPEG, a cut PNG), which :func:`check_image_headers` cannot see."""
    from concurrent.futures import ThreadPoolExecutor

    def problem(path: str) -> str | None:
        try:
            read_image(path)
        except ImageReadError as error:
            return f"{path} ({error.__cause__ or error})"
        return None

    workers = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        broken = [found for found in pool.map(problem, paths, chunksize=64) if found is not None]
    if broken:
        raise ImageReadError(
            f"{len(broken)} of {len(paths)} {split} images cannot be decoded: {_listed(broken)}; "
            "remove or replace them (or re-extract the dataset)"
        )


class ImageDataset(Dataset):
    """Items are dicts ``{"image", "pid", "camid", "viewid", "index"}`` (the batch contract)."""

    def __init__(self, records: Sequence[Record], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.records = RecordTable.from_records(records)  # shared by the workers, not copied
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        record = self.records[index]
        return {
            "image": self.transform(read_image(record.path)),
            "pid": record.pid,
            "camid": record.camid,
            "viewid": record.viewid,
            "index": index,
        }
