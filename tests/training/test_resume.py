"""Exact resume (``ckpt_path=last`` after a kill mid-epoch) and seed determinism of CPU runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reid.data.samplers import IdentitySampler
from reid.run import run
from reid.training.checkpoint_io import AtomicCheckpointIO
from reid.training.resumable import (
    ItemSeededDataset,
    ResumableKeySampler,
    SampleKey,
    TrainPosition,
    item_seed,
)
from tests.conftest import TINY_RUN
from tests.training.callbacks import SimulatedKillError

# 8 identities x 6 images, P x K = 4 x 2: 24 chunks // 4 = 6 steps per epoch; 2 epochs = 12 steps.
RESUMABLE = [
    *TINY_RUN,
    "+model.backbone.depth=1",
    "+model.backbone.embed_dim=32",
    "+model.backbone.num_heads=2",
    "model.backbone.drop_path_rate=0.1",  # randomness in the model too
    "trainer.check_val_every_n_epoch=100",
    "test=false",
    "callbacks.learning_rate_monitor=null",
    "callbacks.model_checkpoint.monitor=null",
    "+callbacks.model_checkpoint.every_n_train_steps=1",
]
KILL_AFTER = 8  # steps: mid-way through epoch 1


def _weights(output_dir: str) -> dict[str, torch.Tensor]:
    checkpoint = AtomicCheckpointIO().load_checkpoint(Path(output_dir) / "checkpoints" / "last.ckpt")
    return checkpoint["state_dict"] | {"global_step": torch.tensor(checkpoint["global_step"])}


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_killed_run_resumed_from_last_equals_uninterrupted(compose_config, tmp_path, monkeypatch):
    full = compose_config(*RESUMABLE)
    full.paths.output_dir = str(tmp_path / "full")
    run(full)

    killed = compose_config(
        *RESUMABLE,
        "+callbacks.kill._target_=tests.training.callbacks.KillAfterSteps",
        f"+callbacks.kill.steps={KILL_AFTER}",
    )
    killed.paths.output_dir = str(tmp_path / "resumed")
    with pytest.raises(SimulatedKillError):
        run(killed)
    mid = AtomicCheckpointIO().load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert mid["global_step"] == KILL_AFTER - 1  # the killed step's checkpoint was never written
    datamodule_state = next(v for k, v in mid.items() if k.endswith("ReIDDataModule"))
    assert datamodule_state == {"epoch": 1, "batches_done": KILL_AFTER - 1 - 6}

    resumed = compose_config(*RESUMABLE, "ckpt_path=last")
    resumed.paths.output_dir = str(tmp_path / "resumed")
    run(resumed)
    final = _weights(resumed.paths.output_dir)
    assert int(final["global_step"]) == 12
    _assert_equal(final, _weights(full.paths.output_dir))


def test_same_seed_gives_identical_weights(compose_config, tmp_path):
    weights = []
    for name in ("a", "b"):
        cfg = compose_config(*RESUMABLE, "seed=3", "trainer.max_epochs=1")
        cfg.paths.output_dir = str(tmp_path / name)
        run(cfg)
        weights.append(_weights(cfg.paths.output_dir))
    _assert_equal(*weights)
    assert int(weights[0]["global_step"]) == 6


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
