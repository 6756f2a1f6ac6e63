"""Callbacks the training tests inject through Hydra (``+callbacks.<name>._target_=...``)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import lightning as L


class SimulatedKillError(RuntimeError):
    """Stands for SIGKILL / a node failure in the middle of training."""


class KillAfterSteps(L.Callback):
    """Dies in ``on_train_batch_end`` of step ``steps``, before that step's checkpoint is written
    (Lightning runs checkpoint callbacks after all others)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.steps:
            raise SimulatedKillError(f"killed at step {trainer.global_step}")


class BatchRecorder(L.Callback):
    """Writes ``rank<r>.json``: the pids of every training batch this rank saw, as (epoch, step, pids)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.batches: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(
            {
                "epoch": trainer.current_epoch,
                "step": batch_idx,
                "pids": batch["pid"].tolist(),
                "index": batch["index"].tolist(),
            }
        )

    def on_train_end(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.batches))


class SigtermAtStep(L.Callback):
    """Sends this process SIGTERM at the start of step ``step``, as a scheduler's preemption would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class ValidationRecorder(L.Callback):
    """Appends ``{"epoch", "step", "mAP"}`` of every validation inside ``fit`` to ``path`` (JSON lines)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        record["mAP"] = float(trainer.callback_metrics.get("val/mAP", float("nan")))
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")


class ClusterStateRecorder(L.Callback):
    """Writes ``rank<r>.json`` for a Cluster Contrast run: per training batch the epoch, the image
    indices, the sum of the cluster memory before the step, and at each epoch's first batch the pseudo
    labels the rank trains on."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.batches: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        record = {
            "epoch": trainer.current_epoch,
            "index": batch["index"].tolist(),
            "memory_sum": float(pl_module.memory.features.double().sum()),
        }
        if batch_idx == 0:
            record["labels"] = pl_module.pseudo_labels.tolist()
        self.batches.append(record)

    def on_train_end(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.batches))


class EpochSteps(L.Callback):
    """Writes ``epochs.json``: per epoch the batches trained, Lightning's ``num_training_batches`` and the
    sampler's plan for it, and the epochs validated."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.record: dict[str, list[int]] = {"trained": [], "lightning": [], "sampler": [], "validated": []}
        self._batches = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.record["trained"].append(self._batches)
        self.record["lightning"].append(int(trainer.num_training_batches))
        sampler = trainer.train_dataloader.sampler
        self.record["sampler"].append(int(sampler.batches_in_epoch(trainer.current_epoch)))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.record["validated"].append(trainer.current_epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        self.path.write_text(json.dumps(self.record))


class StepLosses(L.Callback):
    """Writes ``losses_rank<r>.json``: this rank's training loss at every step (its own share of the batch;
    the mean over ranks is the global batch's loss)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"losses_rank{trainer.global_rank}.json").write_text(json.dumps(self.losses))


class FinalWeights(L.Callback):
    """Writes ``weights_rank<r>.pt``: this process's model state when training ends (every node's)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer, pl_module) -> None:
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.state_dict(), self.folder / f"weights_rank{trainer.global_rank}.pt")


class SigtermAtValidation(L.Callback):
    """Sends this process SIGTERM as the ``nth`` (1-based) validation inside fit starts."""

    def __init__(self, nth: int = 1) -> None:
        self.nth, self.seen = nth, 0

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self.seen += 1
        if self.seen == self.nth:
            os.kill(os.getpid(), signal.SIGTERM)


class SigtermAtTest(L.Callback):
    """Sends this process SIGTERM as the final test starts."""

    def on_test_start(self, trainer, pl_module) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


class KillAtEpochStart(L.Callback):
    """Dies (a SIGKILL stand-in) as epoch ``epoch`` starts: just after the previous epoch's last.ckpt and
    the rows logged at its end, before any step of the new epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise SimulatedKillError(f"killed as epoch {self.epoch} starts")


class KillInValidation(L.Callback):
    """Dies (a SIGKILL stand-in) in the middle of the ``nth`` (1-based) validation inside fit."""

    def __init__(self, nth: int = 1) -> None:
        self.nth, self.seen = nth, 0

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.seen += 1

    def on_validation_batch_end(self, trainer, pl_module, *args) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit" and self.seen == self.nth:
            raise SimulatedKillError(f"killed during validation {self.nth}")


class SigtermOnSave(L.Callback):
    """Sends this process SIGTERM while the ``nth`` (1-based) checkpoint of fit is being written (the
    checkpoint dict is being assembled; the file is written after this hook)."""

    def __init__(self, nth: int = 1) -> None:
        self.nth, self.seen = nth, 0

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.seen += 1
        if self.seen == self.nth:
            os.kill(os.getpid(), signal.SIGTERM)
