"""Each recipe family's image pipelines against the official ones.

Deterministic parts are bit-equal to the torchvision pipeline the official ``make_dataloader`` /
``build_transforms`` / ``get_*_loader`` writes with the same arguments. The random erasing is equal in
distribution to the transcribed official class (tests/official/erasing.py) over 4,000 draws: erasing
rate, area fraction, aspect, position and fill, by a two-sample Kolmogorov-Smirnov test at p > 0.001
(seeded, so the outcome is fixed). The old project erasing (constant 0, area up to 0.4, log-uniform
aspect) fails both comparisons: its area, aspect and fill differ from each official variant.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from scipy.stats import ks_2samp
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from reid.config import CONFIG_DIR
from reid.data.erasing import ZhongRandomErasing
from reid.data.transforms import ReIDTransforms
from tests.official.erasing import timm_pixel_erasing, zhong_random_erasing

MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
IMAGENET = [0.485, 0.456, 0.406]
BICUBIC, BILINEAR = InterpolationMode.BICUBIC, InterpolationMode.BILINEAR
FAMILIES = {  # conf/data/transforms option -> (official train resize, official test resize)
    "transreid": (BICUBIC, BILINEAR),  # T.Resize(SIZE_TRAIN, interpolation=3); T.Resize(SIZE_TEST)
    "bot": (BILINEAR, BILINEAR),  # T.Resize(cfg.INPUT.SIZE_TRAIN); T.Resize(cfg.INPUT.SIZE_TEST)
    "cluster_contrast": (BICUBIC, BICUBIC),  # T.Resize((height, width), interpolation=3), both loaders
}


def _family(name: str) -> ReIDTransforms:
    return instantiate(OmegaConf.load(CONFIG_DIR / "data" / "transforms" / f"{name}.yaml"))


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (203, 77, 3), dtype=np.uint8))  # odd sizes: resizes differ


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_test_pipeline_is_the_official_one_bit_for_bit(name, photo):
    _, test_resize = FAMILIES[name]
    official = T.Compose(
        [T.Resize((384, 128), interpolation=test_resize), T.ToTensor(), T.Normalize(MEAN, STD)]
    )
    assert torch.equal(_family(name).test((384, 128), MEAN, STD)(photo), official(photo))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_train_pipeline_without_erasing_is_the_official_one_bit_for_bit(name, photo):
    """Resize, flip, pad and crop under the same torch seed as the official torchvision steps."""
    train_resize, _ = FAMILIES[name]
    family = _family(name)
    ours = ReIDTransforms(family.train_interpolation, family.test_interpolation, 0.5, 10, erasing=None)
    official = T.Compose(
        [
            T.Resize((256, 128), interpolation=train_resize),
            T.RandomHorizontalFlip(p=0.5),
            T.Pad(10),
            T.RandomCrop((256, 128)),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )
    for seed in range(6):
        torch.manual_seed(seed)
        a = ours.train((256, 128), MEAN, STD)(photo)
        torch.manual_seed(seed)
        assert torch.equal(a, official(photo)), seed


def test_the_interpolations_differ_where_it_matters(photo):
    """The reason to get them right: TransReID tests bilinear; a bicubic test resize moves the input."""
    bicubic = ReIDTransforms(test_interpolation="bicubic").test((384, 128), MEAN, STD)(photo)
    bilinear = _family("transreid").test((384, 128), MEAN, STD)(photo)
    assert (bicubic - bilinear).abs().mean() > 0.01


class Erased:
    """What a batch of erasing draws did: rate, and per erased image its area fraction, aspect h/w,
    relative position and fill statistics (the image starts as a sentinel value, so the rectangle is
    where it changed)."""

    def __init__(self, erase, draws: int = 4000, size: tuple[int, int] = (64, 32), seed: int = 0) -> None:
        random.seed(seed)
        torch.manual_seed(seed)
        self.count, rows = 0, []
        for _ in range(draws):
            image = torch.full((3, *size), 7.0)
            out = erase(image)
            changed = (out != 7.0).any(dim=0)
            if not changed.any():
                continue
            self.count += 1
            ys, xs = torch.nonzero(changed, as_tuple=True)
            top, left, h, w = (
                int(ys.min()),
                int(xs.min()),
                int(ys.max() - ys.min() + 1),
                int(xs.max() - xs.min() + 1),
            )
            fill = out[:, top : top + h, left : left + w]
            rows.append(
                (
                    h * w / (size[0] * size[1]),
                    h / w,
                    top / size[0],
                    left / size[1],
                    float(fill.mean()),
                    float(fill.std()) if fill.numel() > 1 else 0.0,
                )
            )
        self.rate = self.count / draws
        self.values = np.asarray(rows)

    def column(self, i: int) -> np.ndarray:
        return self.values[:, i]


COLUMNS = ("area", "aspect", "top", "left", "fill mean", "fill std")


def _same_distribution(ours: Erased, official: Erased, columns: range = range(len(COLUMNS))) -> None:
    assert ours.rate == pytest.approx(official.rate, abs=4 * np.sqrt(0.25 / 4000))  # 4 standard errors
    for i in columns:
        p = ks_2samp(ours.column(i), official.column(i)).pvalue
        assert p > 1e-3, (
            f"{COLUMNS[i]}: KS p = {p:.2g} (means: ours {ours.column(i).mean():.4f}, "
            f"official {official.column(i).mean():.4f})"
        )


def test_transreid_erasing_is_timms_pixel_mode_in_distribution():
    ours = Erased(_family("transreid").erasing)
    official = Erased(lambda image: timm_pixel_erasing(image, 0.5))
    _same_distribution(ours, official, range(4))  # position and shape; the fill is noise, next
    for kind in (ours, official):  # per-pixel N(0, 1): the mean of a rectangle's pixels is ~0, their std ~1
        assert abs(kind.column(4).mean()) < 0.01 and kind.column(5).mean() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("name", ["bot", "cluster_contrast"])
def test_bot_and_cluster_contrast_erasing_is_zhongs_in_distribution(name):
    erasing = _family(name).erasing
    assert isinstance(erasing, ZhongRandomErasing) and erasing.fill == tuple(IMAGENET)
    ours = Erased(erasing)
    official = Erased(lambda image: zhong_random_erasing(image, 0.5, mean=tuple(IMAGENET)))
    _same_distribution(ours, official, range(4))
    for kind in (ours, official):  # each channel filled with its ImageNet mean: mean 0.449, std over channels
        assert kind.column(4).mean() == pytest.approx(np.mean(IMAGENET), abs=1e-6)


def test_the_old_zero_fill_erasing_is_neither_official_variant():
    old = Erased(T.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.33), value=0))
    with pytest.raises(AssertionError, match="area"):
        _same_distribution(old, Erased(lambda image: timm_pixel_erasing(image, 0.5)), range(1))
    with pytest.raises(AssertionError, match="aspect"):
        _same_distribution(old, Erased(lambda image: zhong_random_erasing(image, 0.5)), range(1, 2))


def test_zhong_erasing_rejects_bad_values():
    with pytest.raises(ValueError, match="probability"):
        ZhongRandomErasing(probability=1.5)
    with pytest.raises(ValueError, match="sl"):
        ZhongRandomErasing(sl=0.5, sh=0.4)
    with pytest.raises(ValueError, match="fill"):
        ZhongRandomErasing(probability=1.0, fill=(0.1, 0.2))(torch.zeros(3, 8, 8))


def test_bad_transform_values_name_the_key():
    with pytest.raises(ValueError, match="test_interpolation='nearest'"):
        ReIDTransforms(test_interpolation="nearest")
    with pytest.raises(ValueError, match="padding"):
        ReIDTransforms(padding=-1)


def test_every_experiment_uses_its_familys_transforms(compose_config):
    """TransReID / TransReID-SSL / PASS fine-tuning: transreid; BoT and SNR: bot; Cluster Contrast:
    cluster_contrast."""
    for path in sorted((CONFIG_DIR / "experiment").glob("*.yaml")):
        cfg = compose_config(f"experiment={path.stem}")
        if "transforms" not in cfg.data:
            continue  # pretraining: multi-crop (data.augment)
        target = cfg.model._target_
        backbone = OmegaConf.select(cfg, "model.backbone._target_") or ""
        if target.endswith("ClusterContrastTask"):
            want = "cluster_contrast"
        elif "resnet" in backbone or "snr" in backbone:
            want = "bot"
        else:
            want = "transreid"
        assert OmegaConf.to_container(cfg.data.transforms) == OmegaConf.to_container(
            OmegaConf.load(CONFIG_DIR / "data" / "transforms" / f"{want}.yaml")
        ), path.stem


def test_a_run_evaluates_with_the_interpolation_it_was_trained_for(tmp_path: Path):
    """Inference rebuilds the run's test pipeline (data.transforms.test_interpolation; runs made before
    the option existed were tested bicubic)."""
    from reid.inference.trained_model import TrainedModel

    def model(interpolation: str) -> TrainedModel:
        return TrainedModel(None, None, None, None, (32, 16), (0.5,) * 3, (0.5,) * 3, "x", interpolation)  # type: ignore[arg-type]

    assert model("bilinear").test_transform().transforms[0].interpolation == BILINEAR
    assert model("bicubic").test_transform().transforms[0].interpolation == BICUBIC
