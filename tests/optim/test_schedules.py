"""The epoch schedules equal the official schedulers as the official loops step them, for every group.

The references are the transcriptions in ``tests/official/schedulers.py`` (timm's CosineLRScheduler as
TransReID vendors it, BoT's WarmupMultiStepLR, torch's StepLR; each with the loop that steps it). The
old project form scaled one schedule by each group's lr factor, so the bias group's (x2) warm-up start
and floor differed from the official absolute ones (the shared start-and-floor test fails on it); and
it stepped TransReID-SSL's scheduler at the epoch's start, training epoch 1 at 6x and 11x the official
lr (``test_transreid_ssl_epoch_one_trains_at_the_warmup_start``).
"""

import itertools
import math

import numpy as np
import pytest
import torch

from reid.optim import StepDecayLR, TimmCosineLR, WarmupMultiStepLR, cosine_schedule, set_epoch_lr
from reid.optim.param_groups import ParamGroupConfig, build_param_groups
from tests.official import schedulers as official

RTOL = 1e-6


def _ours(schedule, peaks: list[float], base: float, epochs: int) -> np.ndarray:
    return np.array([[schedule(e, peak, base, epochs) for peak in peaks] for e in range(epochs)])


@pytest.mark.parametrize(("base", "warmup", "epochs"), [(0.008, 5, 120), (0.01, 5, 120), (0.045, 5, 120)])
def test_timm_cosine_at_epoch_start_is_transreids_loop(base, warmup, epochs):
    peaks = [base, 2 * base]  # weights, biases (BIAS_LR_FACTOR 2)
    want = np.array(official.transreid_loop(peaks, base, epochs, warmup))
    got = _ours(TimmCosineLR(warmup, 0.01, 0.002, "epoch_start"), peaks, base, epochs)
    np.testing.assert_allclose(got, want, rtol=RTOL)


@pytest.mark.parametrize(("base", "warmup", "epochs"), [(0.0004, 20, 120), (0.0004, 20, 60)])
def test_timm_cosine_at_epoch_end_is_transreid_ssl_and_pass_loop(base, warmup, epochs):
    peaks = [base, 2 * base]
    want = np.array(official.transreid_ssl_loop(peaks, base, epochs, warmup))
    got = _ours(TimmCosineLR(warmup, 0.01, 0.002, "epoch_end"), peaks, base, epochs)
    np.testing.assert_allclose(got, want, rtol=RTOL)


def test_the_bias_group_shares_the_absolute_start_and_floor():
    base, schedule = 0.008, TimmCosineLR(5, 0.01, 0.002, "epoch_start")
    weight = [schedule(e, base, base, 120) for e in range(120)]
    bias = [schedule(e, 2 * base, base, 120) for e in range(120)]
    assert bias[0] == pytest.approx(0.01 * base + (2 * base - 0.01 * base) / 5)  # not 2 x the weights'
    assert bias[-1] == weight[-1] == pytest.approx(0.002 * base)  # t = T: the shared floor
    assert bias[0] / weight[0] == pytest.approx((0.01 + 1.99 / 5) / (0.01 + 0.99 / 5))  # old scaled form: 2
    c = 0.5 * (1 + math.cos(math.pi * 119 / 120))  # epoch 119 at t = 119: both near the shared floor
    floor = 0.002 * base
    ratio = (floor + (2 * base - floor) * c) / (floor + (base - floor) * c)
    assert bias[-2] / weight[-2] == pytest.approx(ratio)


def test_transreid_ssl_epoch_one_trains_at_the_warmup_start():
    base = 0.0004
    end, start = TimmCosineLR(20, steps_at="epoch_end"), TimmCosineLR(20, steps_at="epoch_start")
    assert end(0, base, base, 120) == end(0, 2 * base, base, 120) == pytest.approx(0.01 * base)
    assert start(0, base, base, 120) / end(0, base, base, 120) == pytest.approx(5.95)
    assert start(0, 2 * base, base, 120) / end(0, 2 * base, base, 120) == pytest.approx(10.95)


@pytest.mark.parametrize("factor", [0.1, 0.01])
def test_warmup_multistep_is_bots_loop(factor):
    base, peaks = 3.5e-4, [3.5e-4, 7e-4]
    want = np.array(official.bot_loop(peaks, 120, 10, factor, [40, 70], 0.1))
    got = _ours(WarmupMultiStepLR(10, factor, (40, 70), 0.1, "epoch_start"), peaks, base, 120)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    assert got[0, 0] == pytest.approx(base * (factor * 0.9 + 0.1))  # epoch 1 trains at t = 1
    assert got[38, 0] == pytest.approx(base) and got[39, 0] == pytest.approx(0.1 * base)  # 40th epoch decayed


def test_step_decay_is_cluster_contrasts_loop():
    peaks = [3.5e-4]
    want = np.array(official.cluster_contrast_loop(peaks, 50, 20, 0.1))
    np.testing.assert_allclose(_ours(StepDecayLR(20, 0.1), peaks, 3.5e-4, 50), want, rtol=RTOL)


def test_bad_schedule_values_are_rejected():
    with pytest.raises(ValueError, match="milestones"):
        WarmupMultiStepLR(1, 0.1, (3, 2))
    with pytest.raises(ValueError, match="warmup_epochs"):
        TimmCosineLR(warmup_epochs=5)(0, 1.0, 1.0, 3)
    with pytest.raises(ValueError, match="steps_at"):
        TimmCosineLR(steps_at="middle")(0, 1.0, 1.0, 3)
    with pytest.raises(ValueError, match="step_size"):
        StepDecayLR(0)


def test_set_epoch_lr_gives_each_group_its_factor_and_needs_the_epoch_count():
    net = torch.nn.Linear(3, 2)
    groups = build_param_groups(net, 0.008, 1e-4, ParamGroupConfig(bias_lr_factor=2.0))
    optimizer = torch.optim.SGD(groups, lr=0.008, momentum=0.9)
    schedule = TimmCosineLR(5, 0.01, 0.002, "epoch_start")
    set_epoch_lr(optimizer, schedule, 7, 0.008, 120)
    by_factor = {g["lr_factor"]: g["lr"] for g in optimizer.param_groups}
    assert by_factor[1.0] == pytest.approx(schedule(7, 0.008, 0.008, 120))
    assert by_factor[2.0] == pytest.approx(schedule(7, 0.016, 0.008, 120))
    with pytest.raises(ValueError, match="max_epochs"):
        set_epoch_lr(optimizer, schedule, 0, 0.008, None)


def test_dino_arrays_equal_the_official_cosine_scheduler():
    for args in [(1.0, 0.1, 4, 5, 1), (0.002, 1e-6, 100, 7, 10), (0.04, 0.4, 3, 2, 0)]:
        base, final, epochs, per_epoch, warmup = args
        want = official.dino_cosine_scheduler(base, final, epochs, per_epoch, warmup)
        got = cosine_schedule(base, final, epochs, per_epoch, warmup_epochs=warmup)
        np.testing.assert_allclose(got, want, rtol=RTOL)


def test_cosine_schedule_without_warmup_matches_formula():
    values = cosine_schedule(2.0, 0.0, epochs=2, steps_per_epoch=3)
    np.testing.assert_allclose(values, [1.0 + math.cos(math.pi * i / 6) for i in range(6)])


def test_bad_lengths_are_rejected():
    with pytest.raises(ValueError, match="max_epochs"):
        cosine_schedule(1.0, 0.0, epochs=0, steps_per_epoch=3)
    with pytest.raises(ValueError, match="warmup_epochs"):
        cosine_schedule(1.0, 0.0, epochs=3, steps_per_epoch=1, warmup_epochs=5)


def test_a_per_step_schedule_warms_up_and_decays_within_epochs():
    """``per_step`` (the CPU demo's): evaluated at fractional epochs, the warm-up is linear over the first
    epoch's steps from 0.01 x lr and the cosine continuous; at whole epochs it is the epoch schedule."""
    schedule = TimmCosineLR(1, 0.01, 0.002, "epoch_end", per_step=True)
    steps = [schedule(i / 10, 1.0, 1.0, 11) for i in range(110)]
    np.testing.assert_allclose(steps[:10], [0.01 + 0.99 * i / 10 for i in range(10)])
    assert steps[10] == pytest.approx(0.002 + 0.998 * 0.5 * (1 + math.cos(math.pi / 11)))
    assert all(b < a for a, b in itertools.pairwise(steps[10:]))  # decays at every step


def test_the_task_sets_a_per_step_lr_at_every_step(compose_config, tmp_path):
    from reid.run import run
    from tests.conftest import TINY_RUN

    cfg = compose_config(*TINY_RUN, "trainer.max_epochs=2", "test=false", "data.num_workers=0")
    assert cfg.model.schedule.per_step  # vit_tiny, the demo's model
    run(cfg)
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    lrs = [float(r["train/lr"]) for r in rows if r.get("train/lr")]
    assert len(set(lrs)) == len(lrs) > 4  # a new lr every step
    assert lrs[0] == pytest.approx(0.01 * cfg.model.optimizer.lr)
