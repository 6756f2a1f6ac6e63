"""Random erasing (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020) as the recipes' official
code implements it. Two variants are in use:

* TransReID, TransReID-SSL and PASS use timm's ``RandomErasing(probability, mode='pixel', max_count=1)``
  after normalisation: area fraction uniform in [0.02, 1/3], aspect ratio log-uniform in [0.3, 1/0.3],
  10 attempts, the rectangle filled with per-pixel N(0, 1) noise. torchvision's
  ``RandomErasing(p, scale=(0.02, 1/3), ratio=(0.3, 1/0.3), value="random")`` draws the same distribution
  from torch's generator: the data configs use it by ``_target_`` (``conf/data/transforms/transreid.yaml``).
* BoT (reid-strong-baseline ``data/transforms/transforms.py``) and Cluster Contrast
  (``clustercontrast/utils/data/transforms.py``) use the paper authors' own: :class:`ZhongRandomErasing`.

Both draw from torch's global generator, never Python's ``random``: the training stream seeds torch per
item (``reid.data.resumable.ItemSeededDataset``), so the erased rectangles are the same after a
resume and at any worker count (timm's and the official classes draw from ``random``, which nothing
seeds per item).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


class ZhongRandomErasing:
    """The official random erasing of BoT and Cluster Contrast, on a normalised ``[C, H, W]`` tensor.

    With probability ``probability``, up to ``attempts`` times: draw an area fraction ``s ~ U(sl, sh)``
    and an aspect ratio ``r ~ U(r1, 1 / r1)`` (uniform, not log-uniform), set ``h = round(sqrt(s H W r))``,
    ``w = round(sqrt(s H W / r))``; the first draw with ``h < H`` and ``w < W`` fills the rectangle at
    a uniform top-left corner (``top in [0, H - h]``, ``left in [0, W - w]``) with the constant ``fill``
    of each channel and stops. The defaults are the class defaults of the official code (fill: the
    CIFAR means it was written with); BoT and Cluster Contrast pass the ImageNet means as ``fill``
    (``mean=cfg.INPUT.PIXEL_MEAN``, ``mean=[0.485, 0.456, 0.406]``), written into the normalised tensor
    as they are.
    """

    def __init__(
        self,
        probability: float = 0.5,
        sl: float = 0.02,
        sh: float = 0.4,
        r1: float = 0.3,
        fill: Sequence[float] = (0.4914, 0.4822, 0.4465),
        attempts: int = 100,
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"ZhongRandomErasing: probability must lie in [0, 1], got {probability}")
        if not 0.0 < sl <= sh <= 1.0:
            raise ValueError(f"ZhongRandomErasing: need 0 < sl <= sh <= 1, got sl={sl}, sh={sh}")
        if not 0.0 < r1 <= 1.0:
            raise ValueError(f"ZhongRandomErasing: r1 must lie in (0, 1], got {r1}")
        if attempts < 1:
            raise ValueError(f"ZhongRandomErasing: attempts must be >= 1, got {attempts}")
        self.probability, self.sl, self.sh, self.r1 = probability, sl, sh, r1
        self.fill = tuple(float(v) for v in fill)
        self.attempts = attempts

    def __call__(self, image: Tensor) -> Tensor:
        if _uniform(0.0, 1.0) >= self.probability:
            return image
        channels, height, width = image.shape
        if channels != len(self.fill) and channels != 1:
            raise ValueError(
                f"ZhongRandomErasing: {len(self.fill)} fill values for a {channels}-channel image"
            )
        area = height * width
        for _ in range(self.attempts):
            target = _uniform(self.sl, self.sh) * area
            aspect = _uniform(self.r1, 1.0 / self.r1)
            h, w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if w < width and h < height:
                top = int(torch.randint(0, height - h + 1, ()))
                left = int(torch.randint(0, width - w + 1, ()))
                fill = torch.tensor(self.fill[:channels], dtype=image.dtype).view(-1, 1, 1)
                image[:, top : top + h, left : left + w] = fill
                return image
        return image

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(probability={self.probability}, sl={self.sl}, sh={self.sh}, "
            f"r1={self.r1}, fill={self.fill}, attempts={self.attempts})"
        )
