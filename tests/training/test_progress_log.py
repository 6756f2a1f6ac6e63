"""ProgressLog prints plain [train] lines: per epoch always, per N steps only off a terminal."""

from __future__ import annotations

import io
import re

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reid.callbacks.progress_log import ProgressLog, format_duration, format_metrics
from reid.training.epochs import epochs_completed


class _TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = self.layer(x).pow(2).mean()
        self.log("train/loss", loss)
        self.log("train/lr", 1e-3)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _trainer(callback: ProgressLog, epochs: int, **options) -> L.Trainer:
    """A quiet CPU trainer whose only output is ``callback``'s."""
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        **options,
    )


def _fit(callback: ProgressLog, epochs: int = 2, batches: int = 4) -> list[str]:
    data = DataLoader(TensorDataset(torch.randn(batches * 5, 3)), batch_size=5)
    _trainer(callback, epochs).fit(_TinyModule(), train_dataloaders=data)
    return callback.stream.getvalue().splitlines()


def test_step_and_epoch_lines_off_a_terminal():
    lines = _fit(ProgressLog(every_n_steps=2, stream=io.StringIO()))
    # per epoch: steps 2 and 4, then the epoch line (which also sits at batch 4/4)
    assert len(lines) == 6
    heads = [re.match(r"\[train\] epoch (\d)/2 step (\d)/8 \((\d)/4\)", line).groups() for line in lines]
    epoch_1 = [("1", "2", "2"), ("1", "4", "4"), ("1", "4", "4")]
    epoch_2 = [("2", "6", "2"), ("2", "8", "4"), ("2", "8", "4")]
    assert heads == epoch_1 + epoch_2
    assert all(" img/s | ETA " in line for line in lines)
    assert "loss " in lines[0] and "lr 1.0e-03" in lines[0]
    assert lines[2].endswith(tuple(f"epoch {s}s" for s in range(60)))  # epoch line carries its duration
    assert lines[-1].split("ETA ")[1].startswith("0s")  # nothing left after the last step


def test_terminal_gets_epoch_lines_only_unless_forced():
    assert len(_fit(ProgressLog(every_n_steps=1, stream=_Terminal()))) == 2
    assert len(_fit(ProgressLog(every_n_steps=1, step_lines="always", stream=_Terminal()))) == 2 + 8
    assert len(_fit(ProgressLog(every_n_steps=1, step_lines="never", stream=io.StringIO()))) == 2


def test_images_per_second_counts_the_batch():
    callback = ProgressLog(every_n_steps=0, stream=io.StringIO())
    times = iter(float(t) for t in range(1000))
    callback.clock = lambda: next(times)
    line = _fit(callback, epochs=1, batches=4)[0]
    # epoch start at t=1 (t=0 is train start), epoch end read at t=2: 20 images in 1 s
    assert "20.0 img/s" in line


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (5.4, "5s"), (72, "1m12s"), (3725, "1h02m05s"), (float("nan"), "?"), (-1, "?")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_metrics_puts_loss_first_and_skips_other_prefixes():
    metrics = {"val/mAP": torch.tensor(50.0), "train/lr": 0.001, "train/loss_id": 1.25, "train/loss": 2.5}
    assert format_metrics(metrics) == "loss 2.5 loss_id 1.25 lr 1.0e-03"


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="every_n_steps"):
        ProgressLog(every_n_steps=-1)
    with pytest.raises(ValueError, match="step_lines"):
        ProgressLog(step_lines="sometimes")


class _ValidatingModule(_TinyModule):
    """Writes ``[val] epoch e`` / ``[test] epoch e`` lines to ``stream`` as the tasks print them."""

    def __init__(self, stream: io.StringIO) -> None:
        super().__init__()
        self.stream = stream

    def validation_step(self, batch, batch_idx):
        return None

    def test_step(self, batch, batch_idx):
        return None

    def on_validation_epoch_end(self) -> None:
        print(f"[val] epoch {epochs_completed(self.trainer)}", file=self.stream)

    def on_test_epoch_end(self) -> None:
        print(f"[test] epoch {epochs_completed(self.trainer)}", file=self.stream)


def test_epoch_numbers_agree_and_the_train_line_comes_before_its_validation():
    stream = io.StringIO()
    data = DataLoader(TensorDataset(torch.randn(20, 3)), batch_size=5)
    callback = ProgressLog(every_n_steps=0, stream=stream)
    trainer = _trainer(callback, 4, check_val_every_n_epoch=2, num_sanity_val_steps=0)
    module = _ValidatingModule(stream)
    trainer.validate(module, dataloaders=data, verbose=False)  # the untrained model: 0 epochs
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data)
    trainer.test(module, dataloaders=data, verbose=False)
    heads = [" ".join(line.split()[:3]) for line in stream.getvalue().splitlines()]
    assert heads == [
        "[val] epoch 0",
        "[train] epoch 1/4",
        "[train] epoch 2/4",
        "[val] epoch 2",
        "[train] epoch 3/4",
        "[train] epoch 4/4",
        "[val] epoch 4",
        "[test] epoch 4",
    ]
