"""The official random erasing variants, transcribed; both draw from Python's ``random`` module.

* ``zhong_random_erasing``: reid-strong-baseline ``data/transforms/transforms.py`` ``RandomErasing`` (the
  same class in alibaba/cluster-contrast-reid ``clustercontrast/utils/data/transforms.py``).
* ``timm_pixel_erasing``: timm ``data/random_erasing.py`` ``RandomErasing(probability, mode='pixel',
  max_count=1, device='cpu')`` as TransReID / TransReID-SSL / PASS ``datasets/make_dataloader.py`` build it.
"""

from __future__ import annotations

import math
import random

import torch


def zhong_random_erasing(
    img: torch.Tensor,
    probability: float = 0.5,
    sl: float = 0.02,
    sh: float = 0.4,
    r1: float = 0.3,
    mean: tuple[float, ...] = (0.4914, 0.4822, 0.4465),
) -> torch.Tensor:
    """Skip unless uniform(0, 1) < probability; then up to 100 tries of (area fraction ~ U(sl, sh),
    aspect ~ U(r1, 1/r1)); the first rectangle strictly inside the image is filled with ``mean``."""
    if random.uniform(0, 1) >= probability:
        return img
    for _ in range(100):
        area = img.size()[1] * img.size()[2]
        target_area = random.uniform(sl, sh) * area
        aspect_ratio = random.uniform(r1, 1 / r1)
        h = round(math.sqrt(target_area * aspect_ratio))
        w = round(math.sqrt(target_area / aspect_ratio))
        if w < img.size()[2] and h < img.size()[1]:
            x1 = random.randint(0, img.size()[1] - h)
            y1 = random.randint(0, img.size()[2] - w)
            for c in range(img.size()[0]):
                img[c, x1 : x1 + h, y1 : y1 + w] = mean[c]
            return img
    return img


def timm_pixel_erasing(
    img: torch.Tensor,
    probability: float = 0.5,
    min_area: float = 0.02,
    max_area: float = 1 / 3,
    min_aspect: float = 0.3,
) -> torch.Tensor:
    """Skip when random() > probability; one block (count 1), up to 10 tries of (area ~ U(min, max),
    aspect = exp(U(log min_aspect, log 1/min_aspect))); the first fitting block gets per-pixel N(0, 1)."""
    if random.random() > probability:
        return img
    chan, img_h, img_w = img.shape
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    for _ in range(10):
        target_area = random.uniform(min_area, max_area) * img_h * img_w
        aspect_ratio = math.exp(random.uniform(*log_aspect))
        h = round(math.sqrt(target_area * aspect_ratio))
        w = round(math.sqrt(target_area / aspect_ratio))
        if w < img_w and h < img_h:
            top = random.randint(0, img_h - h)
            left = random.randint(0, img_w - w)
            img[:, top : top + h, left : left + w] = torch.empty((chan, h, w), dtype=img.dtype).normal_()
            break
    return img
