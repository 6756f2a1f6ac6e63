"""The header check before training: the parallel path (large splits) finds what the sequential one finds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import reid.data.image_dataset as image_dataset
from reid.data.image_dataset import ImageReadError, check_image_headers


def _tree(tmp_path):
    paths = []
    for index in range(40):
        path = tmp_path / f"{index:02d}.jpg"
        side = 4 if index in (7, 31) else 16  # two too small for min_side 8
        Image.fromarray(np.full((side, side, 3), index, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("parallel", [False, True])
def test_the_parallel_check_finds_what_the_sequential_one_finds(tmp_path, monkeypatch, parallel):
    if parallel:
        monkeypatch.setattr(image_dataset, "PARALLEL_HEADER_CHECK", 10)
    paths = _tree(tmp_path)
    assert check_image_headers(paths, "train", min_side=8, workers=2) == [
        f"{paths[7]} (4x4)",
        f"{paths[31]} (4x4)",
    ]
    (tmp_path / "25.jpg").write_bytes(b"")
    (tmp_path / "33.jpg").write_bytes(b"not a jpeg")
    expected = r"2 of 40 train images cannot be read: .*25.jpg \(empty: 0 bytes\).*33.jpg \(not an image"
    with pytest.raises(ImageReadError, match=expected):
        check_image_headers(paths, "train", workers=2)
