"""Train and test image pipelines of the supervised and Cluster Contrast recipes.

Train: resize -> random horizontal flip -> pad + random crop -> tensor -> normalise -> random erasing.
Test: resize -> tensor -> normalise. What differs between the recipe families (the resize
interpolation of each pipeline, the erasing variant) is one :class:`ReIDTransforms` per family, chosen
by the data config group ``conf/data/transforms`` (``transreid``, ``bot``, ``cluster_contrast``); the
normalisation stays ``data.pixel_mean`` / ``data.pixel_std``, the input statistics of the weights.

| family (official file) | train resize | test resize | erasing |
|---|---|---|---|
| TransReID, -SSL, PASS (``datasets/make_dataloader.py``) | bicubic | bilinear | timm pixel noise |
| BoT (``data/transforms/build.py``) | bilinear | bilinear | Zhong, ImageNet-mean fill |
| Cluster Contrast (``cluster_contrast_train_usl.py``) | bicubic | bicubic | Zhong, ImageNet-mean fill |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import Tensor
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
"""The resize interpolations the recipes use (torchvision's default is bilinear; ``interpolation=3`` is
PIL's bicubic)."""


def transreid_erasing(probability: float = 0.5) -> T.RandomErasing:
    """timm's ``RandomErasing(probability, mode='pixel', max_count=1)`` in distribution."""
    return T.RandomErasing(p=probability, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3), value="random")


def _size(image_size: Sequence[int]) -> tuple[int, int]:
    if len(image_size) != 2 or min(image_size) <= 0:
        raise ValueError(f"image_size must be [height, width] with positive values, got {list(image_size)}")
    return int(image_size[0]), int(image_size[1])


def _interpolation(name: str, key: str) -> InterpolationMode:
    if name not in INTERPOLATIONS:
        raise ValueError(f"data.transforms.{key}={name!r}: expected one of {sorted(INTERPOLATIONS)}")
    return INTERPOLATIONS[name]


@dataclass(frozen=True)
class ReIDTransforms:
    """One recipe family's train and test pipelines (module docstring); the defaults are TransReID's.

    Attributes:
        train_interpolation, test_interpolation: ``"bicubic"`` or ``"bilinear"`` resize of each pipeline.
        flip_prob: horizontal flip probability (``INPUT.PROB``).
        padding: zero padding before the random crop back to the input size (``INPUT.PADDING``); 0: no crop.
        erasing: a transform of the normalised tensor (``reid.data.erasing``), or ``None``.
    """

    train_interpolation: str = "bicubic"
    test_interpolation: str = "bilinear"
    flip_prob: float = 0.5
    padding: int = 10
    erasing: Callable[[Tensor], Tensor] | None = field(default_factory=transreid_erasing)

    def __post_init__(self) -> None:
        _interpolation(self.train_interpolation, "train_interpolation")
        _interpolation(self.test_interpolation, "test_interpolation")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"data.transforms.flip_prob={self.flip_prob}: expected a probability in [0, 1]")
        if self.padding < 0:
            raise ValueError(f"data.transforms.padding={self.padding}: expected an integer >= 0")

    def train(
        self, image_size: Sequence[int], pixel_mean: Sequence[float], pixel_std: Sequence[float]
    ) -> T.Compose:
        """The training pipeline."""
        size = _size(image_size)
        steps: list = [
            T.Resize(size, interpolation=_interpolation(self.train_interpolation, "train_interpolation"))
        ]
        if self.flip_prob > 0:
            steps.append(T.RandomHorizontalFlip(p=self.flip_prob))
        if self.padding > 0:
            steps += [T.Pad(self.padding), T.RandomCrop(size)]
        steps += [T.ToTensor(), T.Normalize(mean=list(pixel_mean), std=list(pixel_std))]
        if self.erasing is not None:
            steps.append(self.erasing)
        return T.Compose(steps)

    def test(
        self, image_size: Sequence[int], pixel_mean: Sequence[float], pixel_std: Sequence[float]
    ) -> T.Compose:
        """The deterministic test pipeline."""
        return T.Compose(
            [
                T.Resize(
                    _size(image_size),
                    interpolation=_interpolation(self.test_interpolation, "test_interpolation"),
                ),
                T.ToTensor(),
                T.Normalize(mean=list(pixel_mean), std=list(pixel_std)),
            ]
        )
