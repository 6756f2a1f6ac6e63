"""Multi-crop views, PASS bands, the resumable sampler and the collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reid.data.multicrop import MultiCropAugmentation, region_bands, sample_resized_crop_box
from reid.data.ssl_datamodule import ResumableRandomSampler, SamplerPosition
from tests.ssl_pretrain.tiny import tiny_datamodule, write_images


def test_region_bands_are_pass_halves_for_three_parts() -> None:
    assert region_bands(256, 3) == [(0, 128), (64, 128), (128, 128)]
    assert region_bands(256, 1) == [(0, 256)]
    assert [top for top, _ in region_bands(250, 4)] == [0, 50, 100, 150]


def test_crop_box_respects_scale_and_bounds() -> None:
    gen = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = sample_resized_crop_box(64, 128, (0.05, 0.4), (0.375, 0.667), gen)
        assert top >= 0 and top + h <= 128 and left >= 0 and left + w <= 64
        assert 0.04 <= h * w / (64 * 128) <= 0.41


def test_views_are_deterministic_in_the_seed() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8))
    augment = MultiCropAugmentation((32, 16), (16, 8), num_local=4)
    a, b, c = augment(image, 7), augment(image, 7), augment(image, 8)
    assert [t.shape for t in a.crops] == [(3, 32, 16)] * 2 + [(3, 16, 8)] * 4
    assert all(torch.equal(x, y) for x, y in zip(a.crops, b.crops))
    assert not torch.equal(a.crops[0], c.crops[0])
    assert a.regions == [0, 0, 0, 0]


def test_pass_local_crops_come_from_their_band() -> None:
    pixels = np.zeros((96, 32, 3), dtype=np.uint8)
    pixels[:48] = 255  # white top half, black bottom half
    augment = MultiCropAugmentation(
        (32, 16), (16, 8), num_regions=3, locals_per_region=4, mean=(0, 0, 0), std=(1, 1, 1)
    )
    views = augment(Image.fromarray(pixels), seed=3)
    assert views.regions == [0] * 4 + [1] * 4 + [2] * 4
    top, bottom = views.crops[2:6], views.crops[10:14]
    assert all(crop.min() >= 0.55 for crop in top)  # only brightness jitter (>= 0.6) darkens white
    assert all(crop.abs().max() <= 1e-6 for crop in bottom)


def test_pass_needs_a_multiple_of_the_parts() -> None:
    with pytest.raises(ValueError, match="multiple of num_regions"):
        MultiCropAugmentation(num_local=4, num_regions=3)


def test_sampler_permutes_each_epoch_and_resumes_mid_epoch() -> None:
    sampler = ResumableRandomSampler(10, batch_size=2, seed=1)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(10))
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(k - 10 for k in epoch1) == list(range(10)) and [k - 10 for k in epoch1] != epoch0
    sampler.resume_from(SamplerPosition(epoch=1, batches_done=3))
    assert list(sampler) == epoch1[6:]
    assert list(sampler) == epoch1  # the resume offset is used once


def test_sampler_shards_are_disjoint() -> None:
    shards = [list(ResumableRandomSampler(11, 2, seed=0, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5 and not set(shards[0]) & set(shards[1])


def test_datamodule_batches_group_crops_by_resolution(image_paths) -> None:
    datamodule = tiny_datamodule(image_paths, num_parts=2)
    batch = next(iter(datamodule.train_dataloader()))
    assert [tuple(c.shape) for c in batch["crops"]] == [(4, 3, 32, 16)] * 2 + [(4, 3, 16, 8)] * 2
    assert batch["regions"].tolist() == [0, 1]
    assert batch["index"].shape == (4,) and batch["index"].max() < len(image_paths)


def test_channel_gain_scales_each_channel_by_its_own_factor() -> None:
    grey = Image.fromarray(np.full((64, 32, 3), 128, dtype=np.uint8))
    plain = MultiCropAugmentation((32, 16), (16, 8), num_local=0, mean=(0, 0, 0), std=(1, 1, 1))
    cast = MultiCropAugmentation(
        (32, 16), (16, 8), num_local=0, mean=(0, 0, 0), std=(1, 1, 1), channel_gain=0.3
    )
    for seed in range(8):
        base = plain(grey, seed).crops[0]
        out = cast(grey, seed).crops[0]
        # the same crop and DINO photometrics, then one factor in [0.7, 1.3] per channel
        ratio = (out / base.clamp(min=1e-6)).flatten(1)
        assert torch.allclose(ratio.min(1).values, ratio.max(1).values, atol=1e-4)
        assert bool(((ratio[:, 0] >= 0.7 - 1e-4) & (ratio[:, 0] <= 1.3 + 1e-4)).all())
    assert not torch.allclose(cast(grey, 0).crops[0][0], cast(grey, 0).crops[0][1])
    with pytest.raises(ValueError, match="channel_gain"):
        MultiCropAugmentation(channel_gain=1.5)


def test_colour_jitter_strengths_and_grayscale_are_configurable() -> None:
    red = Image.fromarray(np.tile(np.array([200, 30, 30], dtype=np.uint8), (64, 32, 1)))
    kwargs = {"num_local": 0, "mean": (0, 0, 0), "std": (1, 1, 1)}
    dino = MultiCropAugmentation((32, 16), (16, 8), **kwargs)
    no_colour = MultiCropAugmentation(
        (32, 16), (16, 8), colour_jitter=(0.4, 0.4, 0.0, 0.0), grayscale_p=0.0, solarize_p=0.0, **kwargs
    )
    dino_grey_or_hued = 0
    for seed in range(40):
        for crop in no_colour(red, seed).crops:
            # no hue shift, saturation change or grayscale: red stays the dominant channel by far
            r, g, b = crop.flatten(1).mean(1).tolist()
            assert r > 2 * g and r > 2 * b and abs(g - b) < 1e-2
        for crop in dino(red, seed).crops:
            r, g, b = crop.flatten(1).mean(1).tolist()
            dino_grey_or_hued += int(not (r > 2 * g and r > 2 * b and abs(g - b) < 1e-2))
    assert dino_grey_or_hued > 0  # the DINO recipe does change the colour of some crops
    with pytest.raises(ValueError, match="colour_jitter"):
        MultiCropAugmentation(colour_jitter=(0.4, 0.4, 0.2))
    with pytest.raises(ValueError, match="grayscale_p"):
        MultiCropAugmentation(grayscale_p=1.5)


def test_setup_names_an_unreadable_pretraining_image_before_the_first_step(tmp_path) -> None:
    """Issue 15 item 6 for pretraining data: a zero-byte and a text file among the images are named at
    setup; ``check_images=False`` skips the check (the LUPerson-scale opt-out)."""
    from reid.data.image_dataset import ImageReadError

    paths = write_images(tmp_path, 6)
    paths[1].write_bytes(b"")
    paths[4].write_text("not an image")
    datamodule = tiny_datamodule(paths, num_parts=0)
    with pytest.raises(ImageReadError, match=r"2 of 6 tiny train images.*img_001\.png \(empty.*img_004\.png"):
        datamodule.setup()
    unchecked = tiny_datamodule(paths, num_parts=0)
    unchecked.check_images = False
    unchecked.setup()
    assert len(unchecked.train_records) == 6
