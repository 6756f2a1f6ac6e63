import math

import numpy as np
import pytest
import torch

from reid.optim import ArrayLR, cosine_schedule, transreid_schedule, warmup_multistep_schedule


def test_cosine_schedule_warmup_and_end_points():
    values = cosine_schedule(1.0, 0.1, epochs=4, steps_per_epoch=5, warmup_epochs=1, warmup_start=0.0)
    assert len(values) == 20
    np.testing.assert_allclose(values[:5], [0.0, 0.25, 0.5, 0.75, 1.0])
    assert values[5] == pytest.approx(1.0)  # cosine starts at base
    # i - W = 14 of 15 decay steps
    assert values[-1] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 14 / 15)))
    assert np.all(np.diff(values[5:]) < 0)


def test_cosine_schedule_without_warmup_matches_formula():
    values = cosine_schedule(2.0, 0.0, epochs=2, steps_per_epoch=3)
    expected = [1.0 + math.cos(math.pi * i / 6) for i in range(6)]
    np.testing.assert_allclose(values, expected)


def test_transreid_schedule_matches_official_formula():
    base, epochs = 0.008, 120
    values = transreid_schedule(base, epochs=epochs, steps_per_epoch=2, warmup_epochs=5)
    per_epoch = values[::2]
    np.testing.assert_allclose(values[1::2], per_epoch)  # constant within an epoch
    init, lr_min = 0.01 * base, 0.002 * base
    assert per_epoch[0] == pytest.approx(init + (base - init) / 5)  # official epoch t=1
    assert per_epoch[3] == pytest.approx(init + 4 * (base - init) / 5)  # t=4, last warmup epoch
    t = 5
    assert per_epoch[4] == pytest.approx(lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * t / 120)))
    assert per_epoch[-1] == pytest.approx(lr_min)  # t = T: cos(pi) = -1
    assert per_epoch.max() < base


def test_warmup_multistep_schedule_matches_bot():
    base, steps = 3.5e-4, 3
    values = warmup_multistep_schedule(base, epochs=120, steps_per_epoch=steps)  # BoT defaults
    assert len(values) == 120 * steps
    per_epoch = values[::steps]
    np.testing.assert_allclose(values[1::steps], per_epoch)  # constant within an epoch
    np.testing.assert_allclose(values[2::steps], per_epoch)
    # 0-based epoch e: warmup 0.1 * (1 - e/10) + e/10, then x0.1 from epoch 40 and again from 70
    expected = {0: 3.5e-5, 1: 0.19 * base, 5: 0.55 * base, 9: 0.91 * base, 10: base, 39: base}
    expected |= {40: 3.5e-5, 69: 3.5e-5, 70: 3.5e-6, 119: 3.5e-6}
    for epoch, lr in expected.items():
        assert per_epoch[epoch] == pytest.approx(lr), epoch
    assert values[10 * steps - 1] == pytest.approx(0.91 * base)  # last step of warmup
    assert values[40 * steps] == pytest.approx(3.5e-5)  # first step after the first milestone


def test_warmup_multistep_schedule_arguments():
    no_warmup = warmup_multistep_schedule(1.0, epochs=4, steps_per_epoch=1, warmup_epochs=0, milestones=[2])
    np.testing.assert_allclose(no_warmup, [1.0, 1.0, 0.1, 0.1])
    with pytest.raises(ValueError, match="milestones"):
        warmup_multistep_schedule(1.0, epochs=4, steps_per_epoch=1, warmup_epochs=1, milestones=[3, 2])
    with pytest.raises(ValueError, match="warmup_epochs"):
        warmup_multistep_schedule(1.0, epochs=4, steps_per_epoch=1, warmup_epochs=10)


def test_bad_lengths_are_rejected():
    with pytest.raises(ValueError, match="max_epochs"):
        cosine_schedule(1.0, 0.0, epochs=0, steps_per_epoch=3)
    with pytest.raises(ValueError, match="warmup_epochs"):
        transreid_schedule(1.0, epochs=3, steps_per_epoch=1, warmup_epochs=5)


def test_array_lr_keeps_group_factors_and_clamps_past_end():
    w, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    base = 0.5
    optimizer = torch.optim.SGD([{"params": [w], "lr": base}, {"params": [b], "lr": 2 * base}], lr=base)
    values = np.array([0.1, 0.2, 0.3])
    scheduler = ArrayLR(optimizer, values, base_lr=base)
    seen = []
    for _ in range(5):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(seen, [[0.1, 0.2], [0.2, 0.4], [0.3, 0.6], [0.3, 0.6], [0.3, 0.6]])
