"""One live run per run folder: ``<run>/.lock`` names the process that holds it.

Two runs started into one ``hydra.run.dir`` (a SLURM script that fixes it, a resume started while the
first run still trains) used to both finish with exit status 0, interleaving ``metrics.csv`` and writing
each other's ``last.ckpt``. :class:`RunFolderLock` is taken at start by the run's first process: the file
is created exclusively (``O_CREAT | O_EXCL``) and holds the host, the pid, the SLURM job if any and the
start time. A second run into the folder fails at once naming the holder. A lock whose holder is gone is
taken over with a warning: on the same host when its pid no longer runs, anywhere when it belongs to the
same SLURM job (a requeued job restarts on another node). A lock of another host that cannot be checked
is refused; the message says how to remove it once that run is known to be over.
:class:`HydraRunFolderLock` takes it before Hydra writes into the folder.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from reid.training.preemption import slurm_job_id

log = logging.getLogger("reid")
LOCK_NAME = ".lock"


class RunFolderBusyError(RuntimeError):
    """Another live run holds the folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def is_first_process() -> bool:
    """Whether this process is the run's first (rank 0 of a launcher, torchrun or SLURM task 0), which
    alone takes the lock: the other processes of a distributed run share the folder by design."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        if int(os.environ.get(key, "0") or 0) != 0:
            return False
    return True


class RunFolderLock:
    """The lock of ``folder`` (module docstring); use as a context manager or call :meth:`acquire` /
    :meth:`release`."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def _record(self) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm_job": slurm_job_id(),
            "started": time.time(),
        }

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict[str, Any]) -> bool:
        job = slurm_job_id()
        if job is not None and holder.get("slurm_job") == job:
            return True
        same_host = holder.get("host") == socket.gethostname()
        return same_host and not _alive(int(holder.get("pid", 0) or 0)) if holder else True

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                    return  # this process holds it (the Hydra callback, then run()): not released here
                if not self._stale(holder):
                    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
                    raise RunFolderBusyError(
                        f"run folder {self.path.parent} is in use by pid {holder.get('pid')} on "
                        f"{holder.get('host')} (started {started}); give this run another folder, or wait "
                        f"for that one to end (if it is over and left the lock behind: rm {self.path})"
                    ) from None
                log.warning("%s was left by pid %s on %s, which is gone: taking it over",
                            self.path, holder.get("pid"), holder.get("host"))  # fmt: skip
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as file:
                json.dump(self._record(), file)
            self.held = True
            atexit.register(self.release)  # also on SystemExit (preemption: exit status 143)
            return

    def release(self) -> None:
        if self.held and self._holder().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class HydraRunFolderLock(Callback):
    """Takes the lock of ``hydra.run.dir`` as Hydra starts a single run, before it writes anything there
    (``.hydra/*.yaml``, the log file): a second run into a held folder changes nothing of the first's.
    Registered in ``conf/hydra/default.yaml``; ``reid.run.run`` takes the same lock (re-entrant within a
    process) for runs started from Python and for each job of a sweep."""

    def __init__(self) -> None:
        self.lock: RunFolderLock | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_first_process():
            return
        self.lock = RunFolderLock(OmegaConf.select(config, "hydra.run.dir"))
        try:
            self.lock.acquire()
        except RunFolderBusyError as error:  # Hydra turns a callback's exception into a warning
            print(f"python -m reid.run: error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()
