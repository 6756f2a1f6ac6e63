"""Crash-safe checkpoint files: write a temporary file beside the target, fsync, then rename.

``os.replace`` is atomic on POSIX and Windows when source and target are on one filesystem (hence
the temporary file lives in the target's folder): a reader, or a run resumed after a kill, sees
either the previous complete ``last.ckpt`` or the new complete one, never a truncated file. The
data is fsynced before the rename and the folder after it, so a power loss cannot reorder them.

Loading is weights-only (``torch.load(weights_only=True)``: no arbitrary pickled code runs) with
the few container types Lightning checkpoints hold (OmegaConf configs from
``save_hyperparameters``, ``pathlib`` paths) allow-listed.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import tempfile
import typing
from collections.abc import Callable
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from reid.models.weights_file import diagnose

_PATH = str | pathlib.Path  # lightning's checkpoint path type


class CheckpointLoadError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file and the likely cause."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (disk full, quota, permissions): the operating system's
    cause (``errno``), the file and the free space of its folder, in place of the zip writer's
    ``unexpected pos`` that torch raises when a write of its archive fails."""


def _os_error_in(error: BaseException) -> OSError | None:
    """The first ``OSError`` in ``error``'s chain (torch's zip writer re-raises a failed ``write`` as a
    ``RuntimeError`` whose ``__context__`` is the ``OSError``)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _write_error(cause: OSError, path: str, folder: str) -> CheckpointWriteError:
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free in {folder}"
    except OSError:
        free = f"free space of {folder} unknown"
    name = errno.errorcode.get(cause.errno or 0, "no errno")
    hint = "; free disk space or point callbacks.model_checkpoint.dirpath at another disk"
    if cause.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        hint = ""
    return CheckpointWriteError(
        cause.errno, f"cannot write checkpoint {path}: {cause.strerror or cause} ({name}); {free}{hint}"
    )


def _safe_globals() -> list[Any]:
    """Types besides tensors and builtins that Lightning checkpoints of this project contain."""
    import collections

    from omegaconf import DictConfig, ListConfig, base, nodes
    from omegaconf.base import ContainerMetadata, Metadata

    allowed: list[Any] = [DictConfig, ListConfig, ContainerMetadata, Metadata, typing.Any]
    allowed += [dict, list, tuple, set, int, float, str, bool, bytes, type(None)]
    allowed += [collections.defaultdict, collections.OrderedDict, base.Node]
    allowed += [v for v in vars(nodes).values() if isinstance(v, type) and issubclass(v, base.Node)]
    allowed += [pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath]
    return allowed


def write_atomically(write: Callable[[typing.BinaryIO], None], path: _PATH) -> None:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, fsync it, then rename it to ``path``.

    If ``write`` raises (or the process dies) the temporary file is removed (or left as a
    ``.tmp`` file) and ``path`` keeps its previous content. A failure of the operating system (disk
    full, quota) is raised as :class:`CheckpointWriteError` naming its cause and the free space.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        cause = _os_error_in(error) if isinstance(error, Exception) else None
        if cause is not None and not isinstance(error, CheckpointWriteError):
            raise _write_error(cause, path, folder) from error
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Persist the rename (POSIX); folders cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` whose saves are atomic on local disks and whose loads are weights-only.

    Remote paths (``s3://`` and other fsspec URLs) fall back to Lightning's own writer.
    Wired in through ``conf/trainer/default.yaml`` (``plugins:``).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO: storage_options is not supported (saving {path})")
        if "://" in str(path) and not str(path).startswith("file://"):
            super().save_checkpoint(checkpoint, path)
            return
        write_atomically(lambda file: torch.save(checkpoint, file), str(path).removeprefix("file://"))

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Any | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """``weights_only`` None or True: the safe loader; False: full unpickling (trusted files only)."""
        fs = get_filesystem(path)
        if not fs.exists(path):
            raise FileNotFoundError(f"AtomicCheckpointIO: checkpoint file not found: {path}")
        if weights_only is False:
            return super().load_checkpoint(path, map_location=map_location, weights_only=False)
        try:
            with torch.serialization.safe_globals(_safe_globals()), fs.open(path, "rb") as file:
                return torch.load(file, map_location=map_location, weights_only=True)
        except Exception as error:  # diagnosed from the file's bytes below
            local = "://" not in str(path) or str(path).startswith("file://")
            why = diagnose(str(path).removeprefix("file://"), error) if local else _first_line(error)
        # raised outside the except: torch's advice to retry with weights_only=False is not chained
        raise CheckpointLoadError(f"cannot load checkpoint {path} (read weights-only, no code runs): {why}")


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def remove_stale_temporaries(folder: _PATH) -> list[str]:
    """Delete the ``.<name>.<random>.tmp`` files :func:`write_atomically` leaves when a process dies
    mid-write (nothing else in ``folder`` is touched); returns the names removed."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return []
    stale = sorted(
        n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp") and n.count(".") >= 3
    )
    for name in stale:
        os.remove(os.path.join(folder, name))
    return stale
