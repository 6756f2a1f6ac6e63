"""Exact resume (``ckpt_path=last`` after a kill mid-epoch) and seed determinism of CPU runs.

The resume tests run with 2 DataLoader workers: worker iterators prefetch as soon as Lightning
creates them, which is what broke exactness before (``reid.data.resumable``).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
import torch

from reid.data.resumable import (
    ItemSeededDataset,
    ResumableKeySampler,
    SampleKey,
    TrainPosition,
    item_seed,
)
from reid.data.samplers import IdentitySampler
from reid.run import run
from reid.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY_RUN, TINY_SSL_DATA, epoch_steps
from tests.training.callbacks import SimulatedKillError

# 8 identities x 6 images, P x K = 4 x 2: 24 chunks, at most 6 steps an epoch (the draws decide:
# tests.conftest.epoch_steps); 2 epochs.
CHECKPOINT_EVERY_STEP = [
    "model.backbone.drop_path_rate=0.1",  # randomness in the model too
    "trainer.check_val_every_n_epoch=100",
    "test=false",
    "callbacks.learning_rate_monitor=null",
    "callbacks.model_checkpoint.monitor=null",
    "+callbacks.model_checkpoint.every_n_train_steps=1",
    "data.num_workers=2",
]
"""What every exact-resume run shares: model randomness, a checkpoint after every step, loader workers."""
RESUMABLE = [
    *TINY_RUN,
    "+model.backbone.depth=1",
    "+model.backbone.embed_dim=32",
    "+model.backbone.num_heads=2",
    *CHECKPOINT_EVERY_STEP,
]
KILL_AFTER = 8  # steps: mid-way through epoch 1
KILL = ["+callbacks.kill._target_=tests.training.callbacks.KillAfterSteps"]


def _weights(output_dir: str) -> dict[str, torch.Tensor]:
    checkpoint = AtomicCheckpointIO().load_checkpoint(Path(output_dir) / "checkpoints" / "last.ckpt")
    return checkpoint["state_dict"] | {"global_step": torch.tensor(checkpoint["global_step"])}


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _column(path: Path, name: str) -> list[tuple[str, str]]:
    """(step, value) of every row of ``metrics.csv`` with a value in column ``name``."""
    with path.open(newline="") as file:
        return [(row["step"], row[name]) for row in csv.DictReader(file) if row.get(name)]


def _kill_then_resume(compose_config, tmp_path: Path, overrides: list[str], kill_after: int) -> dict:
    """Run uninterrupted, run again killed after ``kill_after`` steps, resume; return the mid checkpoint."""
    full = compose_config(*overrides)
    full.paths.output_dir = str(tmp_path / "full")
    run(full)
    killed = compose_config(*overrides, *KILL, f"+callbacks.kill.steps={kill_after}")
    killed.paths.output_dir = str(tmp_path / "resumed")
    with pytest.raises(SimulatedKillError):
        run(killed)
    mid = AtomicCheckpointIO().load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    resumed = compose_config(*overrides, "ckpt_path=last")
    resumed.paths.output_dir = str(tmp_path / "resumed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(resumed)
    assert not [w for w in caught if "not resumable" in str(w.message)]  # Lightning sees a stateful loader
    return mid


def test_killed_run_resumed_from_last_equals_uninterrupted(compose_config, tmp_path):
    steps = epoch_steps(compose_config(*RESUMABLE), 2)
    assert steps[0] < KILL_AFTER - 1 < sum(steps)  # the kill falls inside epoch 1
    mid = _kill_then_resume(compose_config, tmp_path, RESUMABLE, KILL_AFTER)
    assert mid["global_step"] == KILL_AFTER - 1  # the killed step's checkpoint was never written
    assert mid["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches_done": KILL_AFTER - 1 - steps[0]}
    ]
    final = _weights(str(tmp_path / "resumed"))
    assert int(final["global_step"]) == sum(steps)
    _assert_equal(final, _weights(str(tmp_path / "full")))


# PASS pretraining at test size: 40 images, 8 a batch: 5 steps an epoch, 2 epochs.
PASS_RESUMABLE = [
    "experiment=pass_lup",
    "model=pass_tiny",
    "++model.backbone.depth=1",
    "++model.backbone.embed_dim=32",
    "++model.backbone.num_heads=2",
    "model.drop_path_rate=0.1",  # randomness in the model too
    "model.out_dim=64",
    "model.hidden_dim=32",
    "model.bottleneck_dim=16",
    "data=synthetic_ssl",
    "trainer=cpu",
    "logger=csv",
    *TINY_SSL_DATA,
    "data.num_workers=2",
    "data.batch_size=8",
    "data.augment.locals_per_region=1",
    "data.augment.global_size=[32,16]",
    "data.augment.local_size=[16,8]",
    "trainer.max_epochs=2",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "callbacks.knn_monitor=null",
    "callbacks.learning_rate_monitor=null",
    "callbacks.model_checkpoint.every_n_train_steps=1",
    "test=false",
]


# ~20 s (three pretraining runs with 2 workers): kept in the fast suite, resume must stay exact
def test_killed_pass_pretraining_resumed_from_last_equals_uninterrupted(compose_config, tmp_path):
    """Multi-crop randomness, the EMA teacher and the centring state all resume exactly with workers."""
    mid = _kill_then_resume(compose_config, tmp_path, PASS_RESUMABLE, kill_after=7)
    assert mid["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches_done": 1}]
    final = _weights(str(tmp_path / "resumed"))
    assert int(final["global_step"]) == 10
    _assert_equal(final, _weights(str(tmp_path / "full")))
    # the resumed epoch's mean loss covers its steps before the kill too (Lightning's on_epoch mean
    # would restart at the resume and average only the steps after it)
    epoch_losses = [
        _column(tmp_path / run / "csv" / "metrics.csv", "train/loss_epoch") for run in ("full", "resumed")
    ]
    assert len(epoch_losses[0]) == 2
    assert epoch_losses[0] == epoch_losses[1]


def test_same_seed_gives_identical_weights(compose_config, tmp_path):
    weights = []
    for name in ("a", "b"):
        cfg = compose_config(*RESUMABLE, "seed=3", "trainer.max_epochs=1")
        cfg.paths.output_dir = str(tmp_path / name)
        run(cfg)
        weights.append(_weights(cfg.paths.output_dir))
    _assert_equal(*weights)
    assert int(weights[0]["global_step"]) == epoch_steps(cfg, 1)[0]


def test_key_sampler_skips_consumed_batches_of_that_epoch_only():
    pids = [p for p in range(6) for _ in range(4)]
    sampler = ResumableKeySampler(IdentitySampler(pids, batch_size=4, num_instances=2, seed=1), batch_size=4)
    sampler.set_epoch(2)
    full = list(sampler)
    assert [k.slot for k in full] == list(range(len(full))) and {k.epoch for k in full} == {2}
    sampler.resume_from(TrainPosition(epoch=2, batches_done=3))
    assert list(sampler) == full[12:]
    assert list(sampler) == full  # the skip applies once
    sampler.resume_from(TrainPosition(epoch=1, batches_done=3))
    assert list(sampler) == full  # a position of another epoch does not apply


def test_item_seeded_dataset_depends_on_key_not_on_global_rng():
    class Noise(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, index: int) -> torch.Tensor:
            return torch.rand(2) + index

    data = ItemSeededDataset(Noise(), seed=5)
    torch.manual_seed(0)
    first = data[SampleKey(1, 4, 2)]
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(data[SampleKey(1, 4, 2)], first)
    torch.manual_seed(0)
    data[SampleKey(0, 0, 0)]
    assert torch.equal(torch.rand(1), after)  # the global stream is untouched
    assert not torch.equal(data[SampleKey(1, 5, 2)], first)
    assert item_seed(0, 1, 2) != item_seed(0, 2, 1)
    with pytest.raises(ValueError, match="must be >= 0"):
        item_seed(0, -1, 0)
