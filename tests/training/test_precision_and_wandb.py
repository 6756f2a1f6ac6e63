"""bf16 mixed precision on CPU and the wandb logger offline, through `reid.run` on the tiny config."""

from __future__ import annotations

import csv
import json
import math
import struct
import time
from collections.abc import Callable
from pathlib import Path

import torch

from reid.run import run
from reid.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY_RUN, TINY_SSL_DATA, epoch_steps


def wandb_history(path: Path) -> dict[str, list[float]]:
    """Every history value of an offline ``run-*.wandb`` file (a LevelDB-style log of protobuf records:
    a 7-byte file header, then 32 KiB blocks of records with a 7-byte crc/length/type header), up to a
    record still being written (a torn tail)."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data, pos, pending, history = path.read_bytes(), 7, b"", {}
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(pending)
            except DecodeError:  # the record wandb's service is still writing: what is before it
                break
            pending = b""
            for item in record.history.item if record.HasField("history") else []:
                history.setdefault(item.key or "/".join(item.nested_key), []).append(
                    json.loads(item.value_json)
                )
    return history


def wandb_history_once_written(
    path: Path, done: Callable[[dict[str, list[float]]], bool], timeout: float = 30.0
) -> dict[str, list[float]]:
    """:func:`wandb_history` once ``done`` says it is complete, or after ``timeout`` seconds: the offline
    file is written by wandb's own service process, which can still be flushing when ``wandb.finish``
    returns on a loaded machine."""
    deadline = time.monotonic() + timeout
    while True:
        history = wandb_history(path)
        if done(history) or time.monotonic() > deadline:
            return history
        time.sleep(0.5)


SMALL = [*TINY_RUN, "+model.backbone.depth=1", "+model.backbone.embed_dim=32", "+model.backbone.num_heads=2"]
SMALL += ["trainer.max_epochs=1", "callbacks.learning_rate_monitor=null"]


def test_bf16_mixed_trains_and_evaluates_on_cpu(compose_config):
    cfg = compose_config(*SMALL, "model=transreid_tiny", "trainer.precision=bf16-mixed", "test=false")
    run(cfg)
    out = Path(cfg.paths.output_dir)
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == epoch_steps(cfg, 1)[0] and all(math.isfinite(x) for x in losses)
    assert any(r.get("val/mAP") for r in rows)
    state = AtomicCheckpointIO().load_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {
        torch.float32
    }  # fp32 master weights


def test_wandb_offline_run_holds_the_logged_metrics(compose_config, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_config(*SMALL, "logger=wandb", "test=false")
    steps = epoch_steps(cfg, 1)[0]
    assert cfg.logger.wandb.offline is True
    try:
        run(cfg)
    finally:
        import wandb

        wandb.finish()  # writes the summary; reid.run should call this itself (multirun jobs share a process)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "expected one offline run folder (sync later with `wandb sync`)"
    (log,) = runs[0].glob("run-*.wandb")
    expected = {"train/loss", "train/loss_id", "train/loss_tri", "train/lr", "val/mAP", "val/R1", "val/mINP"}
    history = wandb_history_once_written(
        log, lambda h: expected <= set(h) and len(h["train/loss"]) == steps and len(h["val/mAP"]) == 1
    )
    assert expected <= set(history)
    assert len(history["train/loss"]) == steps  # log_every_n_steps=1
    assert all(math.isfinite(v) for v in history["train/loss"])
    assert len(history["val/mAP"]) == 1 and 0.0 <= history["val/mAP"][0] <= 100.0


def test_bf16_mixed_dino_pretraining_on_cpu(compose_config):
    cfg = compose_config(
        "experiment=dino_lup",
        "model=dino_tiny",
        "data=synthetic_ssl",
        "trainer=cpu",
        "logger=csv",
        "trainer.precision=bf16-mixed",
        "data.num_workers=0",
        "data.batch_size=8",
        "trainer.max_steps=3",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=null",
        "callbacks.knn_monitor=null",
        "trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=1",
        *TINY_SSL_DATA,
    )
    run(cfg)
    out = Path(cfg.paths.output_dir)
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    state = AtomicCheckpointIO().load_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_fp16_mixed_trains_with_a_logged_scaler_that_checkpoints_save_and_restore(compose_config, tmp_path):
    """``trainer.precision=16-mixed`` on CPU: fp16 autocast with a GradScaler (the official loops' AMP;
    Lightning alone would switch to bf16), its scale logged as ``train/grad_scale`` at every step, saved
    in ``last.ckpt``, and a resumed run continues from the saved scale, not from a fresh 65536."""
    overrides = [*SMALL, "model=transreid_tiny", "trainer.precision=16-mixed", "test=false"]
    cfg = compose_config(*overrides)
    cfg.paths.output_dir = str(tmp_path / "run")
    run(cfg)
    out = tmp_path / "run"
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    scales = [float(r["train/grad_scale"]) for r in rows if r.get("train/grad_scale")]
    assert len(scales) == epoch_steps(cfg, 1)[0] and scales[0] == 65536.0
    checkpoint = AtomicCheckpointIO().load_checkpoint(out / "checkpoints" / "last.ckpt")
    saved = checkpoint["MixedPrecision"]["scale"]
    assert saved in (scales[-1], scales[-1] / 2, scales[-1] * 2)  # the scale after the last step's update
    weights = checkpoint["state_dict"]
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    assert weights["net.backbone.cls_token"].dtype == torch.float32  # fp32 master weights
    resumed = compose_config(*overrides, "trainer.max_epochs=2", "ckpt_path=last")
    resumed.paths.output_dir = str(out)
    run(resumed)
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    scales_after = [float(r["train/grad_scale"]) for r in rows if r.get("train/grad_scale")]
    assert scales_after[len(scales)] == saved  # the second epoch starts at the checkpoint's scale
