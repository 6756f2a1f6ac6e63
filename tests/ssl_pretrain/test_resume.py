"""Exact resume: a run killed after k steps and resumed equals an uninterrupted run of k + m steps."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.ssl_pretrain.tiny import tiny_datamodule, tiny_task

KILL_AT = 4  # 3 steps per epoch (12 images / 4): step 4 is in the middle of epoch 1
TOTAL = 6


class KilledError(RuntimeError):
    pass


class KillAt(L.Callback):
    """Stops the process-like run at the start of step ``step`` (after the checkpoint of step - 1)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KilledError(f"killed at step {self.step}")


def trainer(tmp: Path, callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(
        max_epochs=3, max_steps=TOTAL, accelerator="cpu", deterministic=True, logger=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, default_root_dir=tmp,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("num_parts", "kill_at"),
    [
        (2, KILL_AT),
        (0, KILL_AT),
        (2, 3),
    ],
    ids=["pass-mid-epoch", "dino-mid-epoch", "pass-epoch-end"],
)
def test_resumed_run_equals_uninterrupted_run(
    tmp_path: Path, image_paths, num_parts: int, kill_at: int
) -> None:
    image_paths = image_paths[:12]
    reference = tiny_task(num_parts)
    trainer(tmp_path / "a", []).fit(reference, tiny_datamodule(image_paths, num_parts))

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=kill_at, save_top_k=-1)
    killed = tiny_task(num_parts)
    with pytest.raises(KilledError):
        trainer(tmp_path / "b", [ckpt, KillAt(kill_at)]).fit(killed, tiny_datamodule(image_paths, num_parts))
    path = next((tmp_path / "ckpt").glob(f"*step={kill_at}.ckpt"))

    resumed = tiny_task(num_parts)
    resumed_trainer = trainer(tmp_path / "c", [])
    resumed_trainer.fit(resumed, tiny_datamodule(image_paths, num_parts), ckpt_path=path)

    assert resumed_trainer.global_step == TOTAL
    expected, actual = reference.state_dict(), resumed.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:  # student, teacher and the loss centres
        assert torch.equal(expected[key], actual[key]), key
    # the run really moved: the teacher differs from its initialisation
    assert not torch.equal(
        expected["teacher.backbone.cls_token"], killed.state_dict()["teacher.backbone.cls_token"]
    )
    opt_a = reference.trainer.optimizers[0].state_dict()
    opt_b = resumed_trainer.optimizers[0].state_dict()
    for param_id, state in opt_a["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b["state"][param_id][name])), name
