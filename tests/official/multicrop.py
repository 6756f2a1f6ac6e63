"""The official DINO multi-crop transform, transcribed: TransReID-SSL ``dino/main_dino.py``
``DataAugmentationDINO`` with ``dino/utils.py`` ``GaussianBlur`` and ``Solarization`` (the same class in
CASIA-IVA-Lab/PASS-reID ``PASS/main_pass.py``, whose local crops come from the top, middle and bottom
halves). Randomness from Python's ``random`` and torch's global generator, as there.
"""

from __future__ import annotations

import random

import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms
from torchvision.transforms import functional as F

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class GaussianBlur:
    """utils.GaussianBlur: with probability p, PIL's GaussianBlur of radius U(radius_min, radius_max)."""

    def __init__(self, p: float = 0.5, radius_min: float = 0.1, radius_max: float = 2.0) -> None:
        self.prob, self.radius_min, self.radius_max = p, radius_min, radius_max

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() > self.prob:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.radius_min, self.radius_max)))


class Solarization:
    """utils.Solarization: with probability p, ImageOps.solarize (threshold 128)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img) if random.random() < self.p else img


class DataAugmentationDINO:
    """2 global crops of ``size``, ``local_crops_number`` local crops of ``crop_size``; ``pass_bands``:
    the locals from PASS's three halves (a third each) instead of the whole image."""

    def __init__(
        self,
        size: tuple[int, int] = (256, 128),
        crop_size: tuple[int, int] = (128, 64),
        global_crops_scale: tuple[float, float] = (0.4, 1.0),
        local_crops_scale: tuple[float, float] = (0.05, 0.4),
        local_crops_number: int = 8,
        pass_bands: bool = False,
    ) -> None:
        flip_and_color_jitter = transforms.Compose(
            [
                transforms.RandomHorizontalFlip(p=0.5),
                transforms.RandomApply(
                    [transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8
                ),
                transforms.RandomGrayscale(p=0.2),
            ]
        )
        normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        bicubic = Image.BICUBIC
        self.global_transfo1 = transforms.Compose(
            [
                transforms.RandomResizedCrop(size=size, scale=global_crops_scale, interpolation=bicubic),
                flip_and_color_jitter,
                GaussianBlur(1.0),
                normalize,
            ]
        )
        self.global_transfo2 = transforms.Compose(
            [
                transforms.RandomResizedCrop(size=size, scale=global_crops_scale, interpolation=bicubic),
                flip_and_color_jitter,
                GaussianBlur(0.1),
                Solarization(0.2),
                normalize,
            ]
        )
        self.local_crops_number = local_crops_number
        self.pass_bands = pass_bands
        self.local_transfo = transforms.Compose(
            [
                transforms.RandomResizedCrop(size=crop_size, scale=local_crops_scale, interpolation=bicubic),
                flip_and_color_jitter,
                GaussianBlur(p=0.5),
                normalize,
            ]
        )

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        crops = [self.global_transfo1(image), self.global_transfo2(image)]
        if not self.pass_bands:
            return crops + [self.local_transfo(image) for _ in range(self.local_crops_number)]
        width, height = image.size
        for top in (0, int(0.25 * height), int(0.5 * height)):
            for _ in range(self.local_crops_number // 3):
                crops.append(self.local_transfo(F.crop(image, top, 0, int(0.5 * height), width)))
        return crops
