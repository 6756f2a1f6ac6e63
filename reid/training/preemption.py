"""Preemption: SIGTERM (and SLURM's requeue signal) stop training at a step boundary with a last.ckpt.

What Lightning 2.6 already does, and what is built on it:

* SIGTERM: Lightning's signal connector sets ``trainer.received_sigterm`` (and forwards the signal
  to DDP workers); the loops then raise :class:`~lightning.pytorch.utilities.exceptions.SIGTERMException`
  after the current training step (or at the next validation batch). That exception is a
  ``SystemExit`` with no code, so the process used to exit with status 0 and no checkpoint. Here
  :class:`~reid.callbacks.checkpoint.LastStateCheckpoint` writes ``last.ckpt`` in the step's
  ``on_train_batch_end`` when the flag is set, and ``reid.run`` turns the exception into
  :class:`Preempted` (exit status 143 = 128 + SIGTERM).
* SLURM (``SLURMEnvironment`` with ``auto_requeue``): Lightning would handle the requeue signal
  (SIGUSR1 unless set otherwise) by saving ``hpc_ckpt_N.ckpt`` from inside the signal handler, in
  the middle of a step, and calling ``scontrol requeue``. :class:`SlurmRequeue` installs its handler
  first (Lightning keeps an existing handler), which sends this process SIGTERM, so Lightning's own
  SIGTERM path stops at the step boundary with ``last.ckpt``; then it requeues the job with
  ``scontrol requeue`` as Lightning does. The requeued job resumes from ``last.ckpt``
  (``reid.run.resolve_ckpt_path``: ``ckpt_path=null`` on a restarted SLURM job).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from types import FrameType
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("reid")

SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM


class Preempted(SystemExit):
    """Training stopped on SIGTERM after writing ``last.ckpt``; the process exits with status 143."""

    def __init__(self, message: str) -> None:
        super().__init__(SIGTERM_EXIT_STATUS)
        self.message = message


def slurm_job_id() -> str | None:
    """``<array job>_<task>`` for array jobs, else ``SLURM_JOB_ID``; None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class SlurmRequeue(L.Callback):
    """On SLURM's requeue signal: stop at the next step boundary with ``last.ckpt``, then requeue the job.

    Inactive unless Lightning's cluster environment is a ``SLURMEnvironment`` with ``auto_requeue``
    (a ``sbatch`` job; ``#SBATCH --signal=SIGUSR1@90`` asks SLURM for the signal 90 s before the end).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._signum: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        environment = trainer._accelerator_connector.cluster_environment
        if stage != "fit" or not isinstance(environment, SLURMEnvironment) or not environment.auto_requeue:
            return
        self._signum = int(environment.requeue_signal or signal.SIGUSR1)
        self._previous = signal.signal(self._signum, self._on_requeue_signal)

    def _on_requeue_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signum is None:  # after fit: Lightning's teardown may re-install this handler; inert
            return
        log.warning("received signal %d: stopping at the next step to requeue the SLURM job", signum)
        self.requested = True
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM path: stop at the step boundary

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handler()  # Lightning calls no teardown hook after an exception
        if not (self.requested and isinstance(exception, SIGTERMException) and trainer.is_global_zero):
            return
        job = slurm_job_id()
        if job is None:
            log.warning("requeue signal outside a SLURM job: not requeued")
            return
        result = subprocess.run(["scontrol", "requeue", job], check=False)
        if result.returncode == 0:
            log.warning("requeued SLURM job %s", job)
        else:
            log.error("scontrol requeue %s failed with status %d", job, result.returncode)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handler()

    def _restore_handler(self) -> None:
        if self._signum is not None:
            signal.signal(self._signum, self._previous)
            self._signum = None


__all__ = ["SIGTERM_EXIT_STATUS", "Preempted", "SlurmRequeue", "slurm_job_id"]
