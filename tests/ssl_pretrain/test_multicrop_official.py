"""Our multi-crop pipeline draws the crops the official DINO / PASS transform draws (issue 31, item 3).

The official transform is transcribed in ``tests/official/multicrop.py`` (TransReID-SSL
``dino/main_dino.py`` ``DataAugmentationDINO``, PASS ``PASS/main_pass.py``). Both are run on the same
image; the crop geometry (area fraction and aspect of every crop box) is compared by a two-sample KS test,
the rates of flip, colour jitter, grayscale, blur and solarisation per crop kind by a two-proportion z-test
(each over >= 2,000 crops), the blur radius by a KS test, and the deterministic part (crop, bicubic resize,
to tensor, normalise) for equality on a fixed box.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter, ImageOps
from scipy.stats import ks_2samp
from torchvision.transforms import functional as F

import reid.data.multicrop as multicrop
from reid.data.multicrop import MultiCropAugmentation, apply_photometric, sample_resized_crop_box
from tests.official.multicrop import MEAN, STD, DataAugmentationDINO

IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 150, 3), dtype=np.uint8))
DRAWS = 3000
PHOTOMETRIC_DRAWS = 2000


def _z(count_a: int, count_b: int, n: int) -> float:
    """Two-proportion z statistic for count_a / n against count_b / n."""
    p = (count_a + count_b) / (2 * n)
    return 0.0 if p in (0.0, 1.0) else abs(count_a - count_b) / n / math.sqrt(2 * p * (1 - p) / n)


@pytest.mark.parametrize(
    ("size", "scale"), [((300, 150), (0.4, 1.0)), ((300, 150), (0.05, 0.4)), ((150, 150), (0.05, 0.4))]
)
def test_crop_boxes_have_the_official_area_and_aspect(size, scale):
    """RandomResizedCrop.get_params (the official crop) against ours, on a person image and on a PASS band."""
    height, width = size
    image = Image.new("RGB", (width, height))
    torch.manual_seed(0)
    official = [_box(image, scale) for _ in range(DRAWS)]
    gen = np.random.default_rng(1)
    ours = [sample_resized_crop_box(width, height, scale, (3 / 4, 4 / 3), gen) for _ in range(DRAWS)]
    for name, value in (
        ("area", lambda b: b[2] * b[3] / (width * height)),
        ("aspect", lambda b: b[3] / b[2]),
    ):
        result = ks_2samp([value(b) for b in official], [value(b) for b in ours])
        assert result.pvalue > 1e-3, (name, result)
    assert ks_2samp([b[0] for b in official], [b[0] for b in ours]).pvalue > 1e-3  # where: the top row


def _box(image, scale):
    from torchvision.transforms import RandomResizedCrop

    return RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3])


class _Counts:
    """Counts the photometric operations applied, by patching the functions both pipelines call."""

    def __init__(self, monkeypatch) -> None:
        self.seen: Counter[str] = Counter()
        self.radii: list[float] = []
        for name in ("hflip", "adjust_brightness", "rgb_to_grayscale"):
            monkeypatch.setattr(F, name, self._wrap(name, getattr(F, name)))
        monkeypatch.setattr(ImageOps, "solarize", self._wrap("solarize", ImageOps.solarize))
        blur = ImageFilter.GaussianBlur

        def radius(*args, **kwargs):
            self.seen["blur"] += 1
            found = blur(*args, **kwargs)
            self.radii.append(found.radius)
            return found

        monkeypatch.setattr(ImageFilter, "GaussianBlur", radius)

    def _wrap(self, name, function):
        def counted(*args, **kwargs):
            self.seen[name] += 1
            return function(*args, **kwargs)

        return counted


@pytest.mark.parametrize(("kind", "index"), [("global 1", 0), ("global 2", 1), ("local", 2)])
def test_photometric_rates_and_blur_radius_are_the_officials(monkeypatch, kind, index):
    small = IMAGE.resize((32, 64))
    official_transform = DataAugmentationDINO(size=(64, 32), crop_size=(32, 16))  # small: fast, same rates
    pipeline = [
        official_transform.global_transfo1,
        official_transform.global_transfo2,
        official_transform.local_transfo,
    ][index]
    official = _Counts(monkeypatch)
    random.seed(0)
    torch.manual_seed(0)
    for _ in range(PHOTOMETRIC_DRAWS):
        pipeline(small)
    monkeypatch.undo()
    ours = _Counts(monkeypatch)
    config = MultiCropAugmentation().photometric[index]
    gen = np.random.default_rng(0)
    for _ in range(PHOTOMETRIC_DRAWS):
        apply_photometric(small, config, gen)
    for name in ("hflip", "adjust_brightness", "rgb_to_grayscale", "blur", "solarize"):
        found = (kind, name, official.seen, ours.seen)
        assert _z(official.seen[name], ours.seen[name], PHOTOMETRIC_DRAWS) < 4, found
    if len(official.radii) > 50:
        assert ks_2samp(official.radii, ours.radii).pvalue > 1e-3
    assert official.seen["solarize"] == 0 if index != 1 else official.seen["solarize"] > 0


def test_the_deterministic_part_is_the_official_crop_resize_and_normalisation(monkeypatch):
    """With every photometric step off, a crop of a fixed box is the official RandomResizedCrop (bicubic) +
    ToTensor + Normalize of that box (float rounding: 1e-5)."""
    box = (40, 10, 180, 100)  # top, left, h, w
    ratios = []
    monkeypatch.setattr(multicrop, "sample_resized_crop_box", lambda *args: ratios.append(args[3]) or box)
    monkeypatch.setattr(multicrop, "apply_photometric", lambda image, cfg, gen: image)
    ours = MultiCropAugmentation()(IMAGE, seed=0).crops
    for crop, size in zip(ours, [(256, 128)] * 2 + [(128, 64)] * 8, strict=True):
        expected = F.normalize(
            F.to_tensor(F.resized_crop(IMAGE, *box, list(size), F.InterpolationMode.BICUBIC)), MEAN, STD
        )
        torch.testing.assert_close(crop, expected, atol=1e-5, rtol=0)
    assert set(ratios) == {(3 / 4, 4 / 3)}  # RandomResizedCrop's, of the image's w/h, as the official
    MultiCropAugmentation(ratio_relative_to_output=True)(IMAGE, seed=0)  # ours (the CPU demos): x w/h
    assert ratios[-1] == pytest.approx((3 / 8, 2 / 3))


def test_pass_bands_are_the_official_halves():
    """PASS's local crops come from rows [0, h/2), [h/4, 3h/4), [h/2, h) (main_pass.py's three crops)."""
    height = IMAGE.height
    official = [
        (0, int(0.5 * height)),
        (int(0.25 * height), int(0.5 * height)),
        (int(0.5 * height), int(0.5 * height)),
    ]
    assert multicrop.region_bands(height, 3) == official
