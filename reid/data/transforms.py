"""Train and test image transforms for supervised ReID (TransReID / bag-of-tricks recipe).

Train: resize -> random horizontal flip -> pad + random crop -> tensor -> normalise -> random
erasing (Zhong et al., AAAI 2020). Test: resize -> tensor -> normalise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode


@dataclass(frozen=True)
class TrainAugment:
    """Probabilities and sizes of the training augmentations (TransReID defaults)."""

    flip_prob: float = 0.5
    padding: int = 10
    erasing_prob: float = 0.5


def _size(image_size: Sequence[int]) -> tuple[int, int]:
    if len(image_size) != 2 or min(image_size) <= 0:
        raise ValueError(f"image_size must be [height, width] with positive values, got {list(image_size)}")
    return int(image_size[0]), int(image_size[1])


def build_train_transform(
    image_size: Sequence[int],
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    augment: TrainAugment | None = None,
) -> T.Compose:
    """The training pipeline; ``augment=None`` uses :class:`TrainAugment` defaults."""
    augment = augment or TrainAugment()
    size = _size(image_size)
    steps: list = [T.Resize(size, interpolation=InterpolationMode.BICUBIC)]
    if augment.flip_prob > 0:
        steps.append(T.RandomHorizontalFlip(p=augment.flip_prob))
    if augment.padding > 0:
        steps += [T.Pad(augment.padding), T.RandomCrop(size)]
    steps += [T.ToTensor(), T.Normalize(mean=list(pixel_mean), std=list(pixel_std))]
    if augment.erasing_prob > 0:
        # Erased pixels are set to 0, i.e. the dataset mean after normalisation (as TransReID).
        steps.append(T.RandomErasing(p=augment.erasing_prob, scale=(0.02, 0.4), ratio=(0.3, 3.33), value=0))
    return T.Compose(steps)


def build_test_transform(
    image_size: Sequence[int], pixel_mean: Sequence[float], pixel_std: Sequence[float]
) -> T.Compose:
    """The deterministic test pipeline."""
    return T.Compose(
        [
            T.Resize(_size(image_size), interpolation=InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(mean=list(pixel_mean), std=list(pixel_std)),
        ]
    )
