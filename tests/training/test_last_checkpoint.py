"""``last.ckpt`` is the newest state, a complete file; resumed runs validate like uninterrupted ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reid.run import run
from reid.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY_RUN, epoch_steps
from tests.training.callbacks import SimulatedKillError

# synthetic_tiny: up to 6 steps an epoch (tests.conftest.epoch_steps); a validation after every epoch; a
# best checkpoint by the monitor each test sets (save_top_k 1: selection=last keeps none).
THREE_EPOCHS = [
    *TINY_RUN,
    "+model.backbone.depth=1",
    "+model.backbone.embed_dim=32",
    "+model.backbone.num_heads=2",
    "trainer.max_epochs=3",
    "test=false",
    "callbacks.learning_rate_monitor=null",
    "callbacks.model_checkpoint.save_top_k=1",
]
IO = AtomicCheckpointIO()


def _checkpoint_state(path: Path) -> dict:
    checkpoint = IO.load_checkpoint(path)
    return next(v for k, v in checkpoint["callbacks"].items() if k.startswith("LastStateCheckpoint"))


def test_last_ckpt_follows_training_when_validation_does_not_improve(compose_config, tmp_path):
    # monitor the step, lower is better: only the first validation "improves"
    cfg = compose_config(
        *THREE_EPOCHS, "callbacks.model_checkpoint.monitor=step", "callbacks.model_checkpoint.mode=min"
    )
    cfg.paths.output_dir = str(tmp_path / "run")
    steps = epoch_steps(cfg, 3)
    run(cfg)
    folder = tmp_path / "run" / "checkpoints"
    last = folder / "last.ckpt"
    assert not last.is_symlink()
    assert IO.load_checkpoint(last)["global_step"] == sum(steps)  # Lightning alone leaves it at epoch 0's end
    state = _checkpoint_state(last)
    assert Path(state["best_model_path"]).name == "epoch000.ckpt" and Path(state["best_model_path"]).is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["epoch000.ckpt", "last.ckpt"]


def test_kill_while_writing_last_keeps_the_best_it_names(compose_config, tmp_path, monkeypatch):
    """Every validation improves (higher step is better); the run dies writing last.ckpt of epoch 1."""
    save = AtomicCheckpointIO.save_checkpoint
    cfg = compose_config(*THREE_EPOCHS, "callbacks.model_checkpoint.monitor=step")
    steps = epoch_steps(cfg, 2)

    def die_on_second_last(self, checkpoint, path, storage_options=None):
        if Path(path).name == "last.ckpt" and checkpoint["global_step"] == sum(steps):
            raise SimulatedKillError("killed while writing last.ckpt")
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", die_on_second_last)
    cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(SimulatedKillError):
        run(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert IO.load_checkpoint(last)["global_step"] == steps[0]
    assert Path(_checkpoint_state(last)["best_model_path"]).is_file()  # epoch000.ckpt was not deleted yet


def test_stale_temporary_files_are_removed_at_start(compose_config, tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / ".last.ckpt.k3j2h1.tmp").write_bytes(b"PK half a checkpoint")
    (folder / "notes.txt").write_text("mine")
    cfg = compose_config(*THREE_EPOCHS, "trainer.max_epochs=1")
    cfg.paths.output_dir = str(tmp_path / "run")
    run(cfg)
    names = sorted(p.name for p in folder.iterdir())
    assert ".last.ckpt.k3j2h1.tmp" not in names and "notes.txt" in names and "last.ckpt" in names


def test_resumed_run_runs_every_validation_and_picks_the_same_best(compose_config, tmp_path):
    def records(name: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]

    def overrides(name: str) -> list[str]:
        recorder = "+callbacks.recorder._target_=tests.training.callbacks.ValidationRecorder"
        return [*THREE_EPOCHS, recorder, f"+callbacks.recorder.path={tmp_path / name}.jsonl"]

    full = compose_config(*overrides("full"))
    steps = epoch_steps(full, 3)
    assert steps[0] + steps[1] < 15 < sum(steps)  # the kill below falls inside epoch 2
    full.paths.output_dir = str(tmp_path / "full")
    full_summary = run(full)
    kill = ["+callbacks.kill._target_=tests.training.callbacks.KillAfterSteps", "+callbacks.kill.steps=15"]
    killed = compose_config(*overrides("resumed"), *kill)  # mid epoch 2; last.ckpt: end of epoch 1
    killed.paths.output_dir = str(tmp_path / "resumed")
    with pytest.raises(SimulatedKillError):
        run(killed)
    resumed = compose_config(*overrides("resumed"), "ckpt_path=last")
    resumed.paths.output_dir = str(tmp_path / "resumed")
    summary = run(resumed)
    ends = [sum(steps[: i + 1]) for i in range(3)]
    assert [(r["epoch"], r["step"]) for r in records("full")] == [(0, ends[0]), (1, ends[1]), (2, ends[2])]
    assert records("resumed") == records("full")
    assert (
        Path(summary["tested_weights"]["checkpoint"]).name
        == Path(full_summary["tested_weights"]["checkpoint"]).name
    )
