"""SLURM preemption (issue 15 item 3): the requeue signal stops training at a step boundary with a
``last.ckpt``, requeues the job with ``scontrol requeue <job>``, and the requeued job resumes from it.

There is no SLURM here: the environment variables a ``sbatch`` job sees are set by hand, ``scontrol`` is a
script on ``PATH`` that records its arguments, and the signal is sent by the process to itself, as
``#SBATCH --signal=SIGUSR1@90`` would.
"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, TensorDataset

from reid.callbacks.checkpoint import LastStateCheckpoint
from reid.run import resolve_ckpt_path
from reid.training.checkpoint_io import AtomicCheckpointIO
from reid.training.preemption import SlurmRequeue

SIGNAL_AT = 3  # global step whose batch is running when SLURM's signal arrives


class _Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _SignalAtStep(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == SIGNAL_AT:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.fixture
def slurm_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A one-task sbatch job's environment and a fake ``scontrol``; returns the file of its calls."""
    calls = tmp_path / "scontrol_calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    env |= {"SLURM_NODEID": "0", "SLURM_JOB_NAME": "reid", "SLURM_NODELIST": "localhost"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    return calls


def test_requeue_signal_writes_last_at_the_step_and_requeues_the_job(slurm_job: Path, tmp_path: Path):
    previous = signal.getsignal(signal.SIGUSR1)
    checkpoints = tmp_path / "run" / "checkpoints"
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        plugins=[SLURMEnvironment(auto_requeue=True), AtomicCheckpointIO()],
        callbacks=[
            LastStateCheckpoint(dirpath=checkpoints, monitor=None, save_last=True),
            SlurmRequeue(),
            _SignalAtStep(),
        ],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=2)  # 8 steps an epoch
    with pytest.raises(SIGTERMException):
        trainer.fit(_Linear(), data)
    state = AtomicCheckpointIO().load_checkpoint(checkpoints / "last.ckpt")
    assert state["global_step"] == SIGNAL_AT + 1  # the running step finished, nothing after it
    assert slurm_job.read_text().split() == ["requeue", "4242"]
    # after fit the handler is handed back (or, where Lightning's teardown re-installs it, inert)
    requeue = next(c for c in trainer.callbacks if isinstance(c, SlurmRequeue))
    if signal.getsignal(signal.SIGUSR1) != previous:
        requeue.requested = False
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)
        assert not requeue.requested
    signal.signal(signal.SIGUSR1, previous)
    # the requeued job (SLURM_RESTART_COUNT > 0) resumes from last.ckpt without being told
    os.environ["SLURM_RESTART_COUNT"] = "1"
    try:
        assert resolve_ckpt_path(None, tmp_path / "run") == str(checkpoints / "last.ckpt")
    finally:
        del os.environ["SLURM_RESTART_COUNT"]
