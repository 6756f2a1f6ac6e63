"""NonFiniteGuard: a NaN/inf loss stops training with a clear message before a checkpoint is written."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from reid.callbacks.nonfinite_guard import NonFiniteGuard, NonFiniteLossError, nonfinite_entries
from reid.training.checkpoint_io import AtomicCheckpointIO


class Regression(L.LightningModule):
    """y = w x; from step ``nan_at`` on the loss is multiplied by NaN (a diverged run)."""

    def __init__(self, nan_at: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.nan_at = nan_at

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        if self.global_step >= self.nan_at:
            loss = loss * float("nan")
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, nan_at: int) -> ModelCheckpoint:
    data = TensorDataset(torch.randn(16, 2), torch.randn(16, 1))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[NonFiniteGuard(), checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(Regression(nan_at), DataLoader(data, batch_size=2))
    return checkpoint


def test_nan_loss_stops_before_its_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"global step 4 .*loss=nan.*bf16-mixed or 32-true"):
        _fit(tmp_path, nan_at=3)
    last = AtomicCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")
    assert last["global_step"] == 3  # 3 good steps; the NaN step (the 4th) never reached ModelCheckpoint
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_finite_run_is_untouched(tmp_path):
    checkpoint = _fit(tmp_path, nan_at=10**6)
    assert AtomicCheckpointIO().load_checkpoint(checkpoint.last_model_path)["global_step"] == 8


def test_non_finite_weights_are_never_saved(tmp_path):
    module = Regression(10**6)
    with torch.no_grad():
        module.layer.weight[0, 0] = float("inf")
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[NonFiniteGuard()], max_epochs=0)
    trainer.strategy.connect(module)
    with pytest.raises(NonFiniteLossError, match="layer.weight"):
        trainer.save_checkpoint(tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()


def test_nonfinite_entries_lists_only_bad_scalars():
    values = {"a": torch.tensor(1.0), "b": torch.tensor(float("inf")), "c": float("nan"), "d": 2.0}
    assert nonfinite_entries(values) == ["b=inf", "c=nan"]
