"""A torch Dataset over :class:`~reid.data.records.Record` lists: decode, transform, label."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from reid.data.records import Record


class ImageReadError(OSError):
    """An image file that is missing, truncated or not an image; the message names the path."""


def read_image(path: str) -> Image.Image:
    """Decode ``path`` as RGB, failing with the path in the message."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise ImageReadError(f"image file not found: {path}") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageReadError(f"cannot decode image {path}: {error} (corrupt or not an image?)") from error


class ImageDataset(Dataset):
    """Items are dicts ``{"image", "pid", "camid", "viewid", "index"}`` (the batch contract)."""

    def __init__(self, records: Sequence[Record], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.records = list(records)
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
