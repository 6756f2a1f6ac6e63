"""Batched feature extraction over image files with a :class:`~reid.inference.TrainedModel`.

Images go through the run's test transform and :class:`~reid.inference.features.FeatureExtractor`
(flip averaging and L2 normalisation as the run's ``eval`` says). An SIE model embeds in its
camera-free mode unless camera ids are given (``camids``, e.g. parsed from Market-style names). A file
that cannot be decoded is an error naming it, or, with ``skip_bad``, left out and listed.

``precision`` names the arithmetic as ``trainer.precision`` does: ``32-true`` (float32, the default: the
numbers the run's evaluation ranked), ``16-mixed`` (fp16 autocast: half the memory traffic on a GPU) or
``bf16-mixed``; features come back as float32 either way. Mixed-precision features differ from float32 ones
by rounding only (a few 1e-4 on unit-length features), so a gallery extracted in one mode can be searched
with queries of another; the metadata records the mode and ``reid.tools.search`` embeds its queries in the
gallery's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from reid.data.image_dataset import ImageReadError, read_image
from reid.inference.features import FeatureExtractor
from reid.inference.name_labels import NameLabel, name_formats
from reid.inference.trained_model import TrainedModel

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "32-true": None,
    "16-mixed": torch.float16,
    "bf16-mixed": torch.bfloat16,
}
"""Extraction precisions (named as ``trainer.precision``) and the autocast dtype of each."""


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`AUTOCAST_DTYPES`, else an error naming the choices."""
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(AUTOCAST_DTYPES)}")
    return precision


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """The autocast context of ``precision`` on ``device`` (none for ``32-true``)."""
    dtype = AUTOCAST_DTYPES[check_precision(precision)]
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Extraction:
    """Features ``[N, D]`` (float32, CPU) of the images ``paths`` (row order); ``skipped``: the files left
    out, as ``{"path", "error"}``."""

    features: Tensor
    paths: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)


class ImageFiles(Dataset):
    """Items ``{"index", "image"}``, or ``{"index", "error"}`` for a file that cannot be decoded."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Any], Tensor]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return {"index": index, "image": self.transform(read_image(self.paths[index]))}
        except ImageReadError as error:
            return {"index": index, "error": str(error)}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [item for item in items if "image" in item]
    return {
        "index": [item["index"] for item in good],
        "images": torch.stack([item["image"] for item in good]) if good else None,
        "errors": [(item["index"], item["error"]) for item in items if "error" in item],
    }


def camera_mode(model: TrainedModel, with_camids: bool) -> str:
    """How SIE is fed, for the metadata: ``no SIE``, ``camera-free`` or ``camera ids``."""
    if model.camera_embed is None:
        return "no SIE (images only)"
    if not with_camids or not model.uses_cameras:
        return "camera-free (SIE: the mean embedding of the table)"
    views = "; views averaged (camera-free over views)" if model.uses_views else ""
    return f"camera ids (SIE rows of the given cameras{views})"


_MAX_LISTED = 5


def camids_from_names(
    model: TrainedModel, paths: Sequence[str], labels: Sequence[NameLabel | None]
) -> list[int]:
    """Each image's 0-based camera from its name; a name without one, or a camera the model was not
    trained with, is an error naming the files."""
    if not model.uses_cameras:
        raise ValueError(
            f"--camids-from-names: the model of {model.files.checkpoint} has no camera SIE, so camera ids "
            "change nothing; leave the flag out"
        )
    unlabelled = [path for path, label in zip(paths, labels, strict=True) if label is None]
    if unlabelled:
        raise ValueError(
            f"--camids-from-names: {len(unlabelled)} file names carry no camera (the name format of a "
            f"registered dataset: {', '.join(name_formats())}): {'; '.join(unlabelled[:_MAX_LISTED])}"
        )
    known = [label for label in labels if label is not None]  # all of them, as checked above
    cameras = model.data_info.num_cameras
    outside = [
        f"{p} (camera {lab.camid})" for p, lab in zip(paths, known, strict=True) if lab.camid >= cameras
    ]
    if outside:
        raise ValueError(
            f"--camids-from-names: the model knows cameras 0..{cameras - 1} (0-based); out of range: "
            + "; ".join(outside[:_MAX_LISTED])
        )
    return [label.camid for label in known]


def extract_features(
    model: TrainedModel,
    paths: Sequence[str],
    camids: Sequence[int] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    skip_bad: bool = False,
    progress: bool = True,
    precision: str = "32-true",
) -> Extraction:
    """Features of ``paths`` (camera-free without ``camids``; ``camids[i]`` is the camera of ``paths[i]``),
    computed in ``precision`` (module docstring)."""
    from tqdm.auto import tqdm

    check_precision(precision)
    if camids is not None and len(camids) != len(paths):
        raise ValueError(f"extract: {len(camids)} camera ids for {len(paths)} images")
    device = model.task.device
    extractor = FeatureExtractor(model.task, model.evaluation.normalize).eval()
    loader = DataLoader(
        ImageFiles(paths, model.test_transform()),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    rows: list[Tensor] = []
    kept: list[int] = []
    skipped: list[dict[str, str]] = []
    with torch.inference_mode():
        for batch in tqdm(loader, desc="extracting", unit="batch", disable=not progress):
            for index, error in batch["errors"]:
                if not skip_bad:
                    raise ImageReadError(f"{error} (--skip-bad leaves such files out)")
                skipped.append({"path": paths[index], "error": error})
            if batch["images"] is None:
                continue
            cams = (
                None if camids is None else torch.tensor([camids[i] for i in batch["index"]], device=device)
            )
            with autocast(device, precision):
                rows.append(extractor(batch["images"].to(device), cams).float().cpu())
            kept.extend(batch["index"])
    if not kept:
        raise ImageReadError(
            f"extract: none of the {len(paths)} images could be read ({skipped[0]['error']})"
        )
    return Extraction(torch.cat(rows), [paths[i] for i in kept], skipped)
