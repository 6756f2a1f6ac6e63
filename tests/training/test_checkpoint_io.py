"""Atomic checkpoint writes (a crash mid-save keeps the old file) and weights-only loading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from reid.training.checkpoint_io import AtomicCheckpointIO, CheckpointLoadError, write_atomically


def _checkpoint(value: float) -> dict:
    hparams = OmegaConf.create({"backbone": {"_target_": "x.y", "depth": 2, "size": [256, 128]}, "lr": 0.1})
    return {"state_dict": {"w": torch.full((3,), value)}, "global_step": 7, "hyper_parameters": hparams}


def test_save_then_weights_only_load_round_trips_configs(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint(_checkpoint(1.0), path)
    loaded = io.load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(3))
    assert loaded["hyper_parameters"].backbone.size == [256, 128]
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(_checkpoint(1.0), path)

    def save_half_then_crash(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip archive")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", save_half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint(_checkpoint(2.0), path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_process_killed_mid_write_leaves_old_file_intact(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(1.0), path)
    before = path.read_bytes()
    script = (
        "import os, sys\n"
        "from reid.training.checkpoint_io import write_atomically\n"
        "def die(file):\n"
        "    file.write(b'x' * 4096); file.flush(); os._exit(9)\n"
        "write_atomically(die, sys.argv[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], timeout=60)
    assert result.returncode == 9
    assert path.read_bytes() == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.ckpt.") and leftovers[0].endswith(".tmp")


def test_write_atomically_replaces_content(tmp_path):
    path = tmp_path / "f.bin"
    write_atomically(lambda f: f.write(b"one"), path)
    write_atomically(lambda f: f.write(b"two"), path)
    assert Path(path).read_bytes() == b"two"


def test_load_errors_name_the_file(tmp_path):
    io = AtomicCheckpointIO()
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        io.load_checkpoint(tmp_path / "missing.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    io.save_checkpoint(_checkpoint(1.0), truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(CheckpointLoadError, match="truncated.ckpt"):
        io.load_checkpoint(truncated)


class _Unsafe:
    pass


def test_arbitrary_objects_are_refused_unless_trusted(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"obj": _Unsafe()}, path)
    with pytest.raises(CheckpointLoadError, match="weights-only"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert isinstance(AtomicCheckpointIO().load_checkpoint(path, weights_only=False)["obj"], _Unsafe)


def test_trainer_config_wires_the_plugin():
    from reid.config import CONFIG_DIR

    trainer = OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml")
    assert [p["_target_"] for p in trainer.plugins] == ["reid.training.checkpoint_io.AtomicCheckpointIO"]
