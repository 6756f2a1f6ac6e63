"""DINO multi-crop augmentation and PASS part-region local crops.

DINO (Caron et al., ICCV 2021, Sec. 3.1 and App. D; TransReID-SSL ``dino/main_dino.py`` and PASS
``PASS/main_pass.py`` ``DataAugmentationDINO``): two global crops (here 256x128, area scale 0.4-1) and
``n`` local crops (128x64, scale 0.05-0.4), each a ``RandomResizedCrop`` (bicubic; aspect w/h of the
crop log-uniform in (3/4, 4/3), the image's own pixels stretched to the output's 1:2) with a horizontal
flip, colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, p 0.8), grayscale (p 0.2),
Gaussian blur (PIL's ``GaussianBlur``, radius U(0.1, 2.0); p 1.0 on the first global crop, 0.1 on the
second, 0.5 on the locals) and solarisation (p 0.2, second global crop only). The same distributions
as the official transforms, checked in ``tests/ssl_pretrain/test_multicrop_official.py``; faster
(``benchmarks/multicrop_bench.py``): the crop's tensor is normalised in one pass.

``ratio_relative_to_output`` (ours, the CPU demos): the aspect range is multiplied by the output's w/h
(a 2:1 person crop stays person-shaped instead of being stretched).

PASS (Zhu et al., ECCV 2022, Sec. 3.2): the local crops are drawn from ``L`` overlapping horizontal
bands instead of the whole image, ``n // L`` from each, so that part token ``r`` of the student sees
band ``r``. For L = 3 the bands are the top half, the middle half (0.25h-0.75h) and the bottom
half; in general band ``r`` spans ``[r h / (L+1), (r+2) h / (L+1))``.

Colour-cast jitter (ours, off by default): ``channel_gain = a`` multiplies each RGB channel of every
crop by its own factor drawn from U(1 - a, 1 + a) after DINO's photometric steps, so that two views
of one image no longer share their colour cast. DINO's jitter scales the channels together; a
camera's cast scales them apart, and without this a short pretraining on surveillance-style data
can match views by cast instead of by person.

All randomness comes from a ``numpy.random.Generator`` seeded by the caller (``np.random.default_rng(seed)``;
a draw costs a tenth of a ``torch.rand(...).item()``), so the crops of an image are a pure function of
(seed, image): worker count, worker order and resuming do not change them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


DINO_COLOUR_JITTER = (0.4, 0.4, 0.2, 0.1)


@dataclass(frozen=True)
class PhotometricConfig:
    """Probabilities and strengths of the photometric augmentations of one crop kind.

    ``colour_jitter`` is (brightness, contrast, saturation, hue) as in torchvision's ColorJitter:
    the first three factors are drawn from U(1 - s, 1 + s), the hue shift from U(-h, h).
    """

    blur_p: float
    solarize_p: float = 0.0
    flip_p: float = 0.5
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    colour_jitter: tuple[float, float, float, float] = DINO_COLOUR_JITTER


GLOBAL_1 = PhotometricConfig(blur_p=1.0)
GLOBAL_2 = PhotometricConfig(blur_p=0.1, solarize_p=0.2)
LOCAL = PhotometricConfig(blur_p=0.5)


@dataclass(frozen=True)
class MultiCropViews:
    """The crops of one image: globals first, then locals; ``regions[j]`` is the band of local j
    (0 for every local crop in plain DINO)."""

    crops: list[torch.Tensor]
    regions: list[int]


def _uniform(gen: np.random.Generator, low: float, high: float) -> float:
    return low + (high - low) * gen.random()


def _coin(gen: np.random.Generator, p: float) -> bool:
    return p > 0 and gen.random() < p


def sample_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: np.random.Generator,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop with area fraction in ``scale`` and aspect w/h in
    ``ratio`` (the RandomResizedCrop rule: 10 tries, then the largest centred crop)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(gen, *scale)
        aspect = math.exp(_uniform(gen, *log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(gen.integers(0, height - h + 1))
            left = int(gen.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def region_bands(height: int, num_regions: int) -> list[tuple[int, int]]:
    """(top, band height) of the ``num_regions`` overlapping horizontal bands of an image.

    Band r covers rows [r h/(L+1), (r+2) h/(L+1)); L = 3 gives PASS's top half, middle half and
    bottom half, L = 1 the whole image.
    """
    if num_regions < 1:
        raise ValueError(f"num_regions must be >= 1, got {num_regions}")
    step = height / (num_regions + 1)
    return [(int(r * step), max(1, int((r + 2) * step) - int(r * step))) for r in range(num_regions)]


class MultiCropAugmentation:
    """Image -> :class:`MultiCropViews` (DINO multi-crop; PASS region crops when ``num_regions > 0``).

    Args:
        global_size: (h, w) of the global crops.
        local_size: (h, w) of the local crops.
        num_local: number of local crops (DINO); with regions it must be a multiple of ``num_regions``.
        num_regions: 0 for DINO (locals from the whole image), L > 0 for PASS bands.
        locals_per_region: PASS only: crops per band, overriding ``num_local`` with
            ``locals_per_region * num_regions`` (so ``model.num_parts=1,2,3,4`` sweeps need no edit).
        global_scale, local_scale: area fractions of the crops (of the band for PASS locals).
        ratio: aspect range w/h of the crop (RandomResizedCrop's (3/4, 4/3), as the official code).
        ratio_relative_to_output: multiply ``ratio`` by the output's w/h (ours: a 2:1 person crop stays
            person-shaped; the official crops are stretched).
        colour_jitter: (brightness, contrast, saturation, hue) strengths, DINO's by default. On data
            where identity is mostly clothing colour, hue 0 keeps a red shirt red in every view.
        grayscale_p: probability of converting a crop to grayscale (DINO: 0.2).
        solarize_p: probability of solarising the second global crop (DINO: 0.2).
        channel_gain: per-channel colour-cast jitter strength (ours, 0 = off; module docstring).
    """

    def __init__(
        self,
        global_size: tuple[int, int] = (256, 128),
        local_size: tuple[int, int] = (128, 64),
        num_local: int = 8,
        num_regions: int = 0,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        locals_per_region: int | None = None,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        channel_gain: float = 0.0,
        colour_jitter: tuple[float, float, float, float] = DINO_COLOUR_JITTER,
        grayscale_p: float = 0.2,
        solarize_p: float = 0.2,
        ratio_relative_to_output: bool = False,
    ) -> None:
        if not 0.0 <= channel_gain < 1.0:
            raise ValueError(f"channel_gain must be in [0, 1), got {channel_gain}")
        jitter = tuple(float(v) for v in colour_jitter)
        if len(jitter) != 4 or not all(0.0 <= v < 1.0 for v in jitter[:3]) or not 0.0 <= jitter[3] <= 0.5:
            raise ValueError(
                "colour_jitter must be (brightness, contrast, saturation, hue) with the first three "
                f"in [0, 1) and hue in [0, 0.5], got {list(colour_jitter)}"
            )
        for name, p in (("grayscale_p", grayscale_p), ("solarize_p", solarize_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if locals_per_region is not None and num_regions > 0:
            num_local = locals_per_region * num_regions
        if num_local < 0:
            raise ValueError(f"num_local must be >= 0, got {num_local}")
        if num_regions > 0 and num_local % num_regions != 0:
            raise ValueError(
                f"num_local={num_local} must be a multiple of num_regions={num_regions} "
                "(PASS draws num_local // num_regions crops from each band)"
            )
        self.global_size = (int(global_size[0]), int(global_size[1]))
        self.local_size = (int(local_size[0]), int(local_size[1]))
        self.num_local = num_local
        self.num_regions = num_regions
        self.global_scale = (float(global_scale[0]), float(global_scale[1]))
        self.local_scale = (float(local_scale[0]), float(local_scale[1]))
        self.ratio = tuple(ratio)
        self.ratio_relative_to_output = bool(ratio_relative_to_output)
        # (x / 255 - mean) / std as x * scale + shift
        self._scale = np.array([1.0 / (255.0 * s) for s in std], dtype=np.float32).reshape(3, 1, 1)
        self._shift = np.array([-m / s for m, s in zip(mean, std, strict=True)], dtype=np.float32).reshape(
            3, 1, 1
        )
        self.mean = list(mean)
        self.std = list(std)
        self.channel_gain = channel_gain
        self.photometric = (
            replace(GLOBAL_1, colour_jitter=jitter, grayscale_p=grayscale_p),
            replace(GLOBAL_2, colour_jitter=jitter, grayscale_p=grayscale_p, solarize_p=solarize_p),
            replace(LOCAL, colour_jitter=jitter, grayscale_p=grayscale_p),
        )

    @property
    def local_regions(self) -> list[int]:
        """Band index of every local crop, in output order."""
        if self.num_regions == 0:
            return [0] * self.num_local
        per_region = self.num_local // self.num_regions
        return [r for r in range(self.num_regions) for _ in range(per_region)]

    def __call__(self, image: Image.Image, seed: int) -> MultiCropViews:
        gen = np.random.default_rng(seed)
        image = image.convert("RGB")
        global_1, global_2, local = self.photometric
        crops = [
            self._crop(image, self.global_size, self.global_scale, global_1, gen),
            self._crop(image, self.global_size, self.global_scale, global_2, gen),
        ]
        regions = self.local_regions
        bands = region_bands(image.height, self.num_regions) if self.num_regions else []
        for region in regions:
            source = image
            if bands:
                top, band_h = bands[region]
                source = image.crop((0, top, image.width, top + band_h))
            crops.append(self._crop(source, self.local_size, self.local_scale, local, gen))
        return MultiCropViews(crops, regions)

    def _crop(
        self,
        image: Image.Image,
        size: tuple[int, int],
        scale: tuple[float, float],
        photometric: PhotometricConfig,
        gen: np.random.Generator,
    ) -> torch.Tensor:
        aspect = size[1] / size[0] if self.ratio_relative_to_output else 1.0
        ratio = (self.ratio[0] * aspect, self.ratio[1] * aspect)
        top, left, h, w = sample_resized_crop_box(image.width, image.height, scale, ratio, gen)
        out = TF.resized_crop(image, top, left, h, w, list(size), TF.InterpolationMode.BICUBIC)
        return self._to_normalised_tensor(apply_photometric(out, photometric, gen), gen)

    def _to_normalised_tensor(self, image: Image.Image, gen: np.random.Generator) -> torch.Tensor:
        """``(x / 255 - mean) / std`` as ``[3, H, W]`` float32, written once from the HWC pixels (ToTensor +
        Normalize make four passes: 3x slower), after the colour-cast gain when it is on."""
        pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
        out = np.empty(pixels.shape, dtype=np.float32)
        if self.channel_gain > 0:
            gain = 1.0 + self.channel_gain * (2.0 * gen.random((3, 1, 1)) - 1.0)
            np.multiply(pixels, gain, out=out)
            np.clip(out, 0.0, 255.0, out=out)
            out *= self._scale
        else:
            np.multiply(pixels, self._scale, out=out)
        out += self._shift
        return torch.from_numpy(out)


def apply_photometric(image: Image.Image, cfg: PhotometricConfig, gen: np.random.Generator) -> Image.Image:
    """Flip, colour jitter (random order), grayscale, blur and solarisation as in DINO."""
    if _coin(gen, cfg.flip_p):
        image = TF.hflip(image)
    if _coin(gen, cfg.jitter_p):
        image = _colour_jitter(image, cfg.colour_jitter, gen)
    if _coin(gen, cfg.grayscale_p):
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if _coin(gen, cfg.blur_p):  # the official utils.GaussianBlur: PIL's filter, radius U(0.1, 2.0)
        image = image.filter(ImageFilter.GaussianBlur(radius=_uniform(gen, 0.1, 2.0)))
    if _coin(gen, cfg.solarize_p):
        image = TF.solarize(image, 128)
    return image


def _colour_jitter(
    image: Image.Image, strengths: tuple[float, float, float, float], gen: np.random.Generator
) -> Image.Image:
    """ColorJitter(brightness, contrast, saturation, hue) in a random order.

    The random draws do not depend on the strengths, so changing one strength leaves every other
    random choice of the crop unchanged; an operation of strength 0 is skipped (identity).
    """
    brightness, contrast, saturation, hue = strengths
    order = gen.permutation(4).tolist()
    unit = [_uniform(gen, -1.0, 1.0) for _ in range(4)]
    factors = [
        1.0 + brightness * unit[0],
        1.0 + contrast * unit[1],
        1.0 + saturation * unit[2],
        hue * unit[3],
    ]
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for k in order:
        if strengths[k] > 0:
            image = ops[k](image, factors[k])
    return image
