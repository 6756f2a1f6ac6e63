"""How a command ends on bad input: one line on stderr naming the file, key or value and what was
expected, exit status 2; the traceback only with ``--debug`` (or the environment variable
``REID_DEBUG=1``).

``python -m reid.run`` and every ``python -m reid.tools.<tool>`` run through :func:`bad_input_exits`.
Bad input is what the library raises with such a message: ``ValueError`` (and its subclasses: dataset
format, weights, config value and metrics-file errors), ``OSError`` (a missing or unreadable file),
``KeyError`` naming a missing entry, :class:`~reid.training.checkpoint_io.CheckpointLoadError`,
:class:`~reid.training.run_lock.RunFolderBusyError`, and Hydra's instantiation and OmegaConf's key
errors, which carry the message of the value they could not build. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf.errors import OmegaConfBaseException

from reid.data.datasets.registry import DatasetModuleError
from reid.training.checkpoint_io import CheckpointLoadError
from reid.training.run_lock import RunFolderBusyError

BAD_INPUT: tuple[type[BaseException], ...] = (
    ValueError, OSError, KeyError, CheckpointLoadError, RunFolderBusyError, InstantiationException,
    OmegaConfBaseException, MisconfigurationException, DatasetModuleError,
)  # fmt: skip
DEBUG_FLAG = "--debug"
DEBUG_ENV = "REID_DEBUG"


def debugging() -> bool:
    """Whether tracebacks were asked for (``--debug`` on the command line, or ``REID_DEBUG=1``)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def take_debug_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--debug``; its presence sets ``REID_DEBUG=1`` for this process and its children
    (and ``HYDRA_FULL_ERROR=1``: Hydra then prints the whole traceback of an error composing or building)."""
    if DEBUG_FLAG in argv:
        os.environ[DEBUG_ENV] = "1"
        os.environ["HYDRA_FULL_ERROR"] = "1"
    return [arg for arg in argv if arg != DEBUG_FLAG]


def one_line(error: BaseException) -> str:
    """The error's own message (a KeyError's without the quotes ``str`` adds; for an object Hydra could not
    build, the message of what its constructor raised, which names the key)."""
    if isinstance(error, InstantiationException) and isinstance(error.__cause__, BAD_INPUT):
        return one_line(error.__cause__)
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error).strip() or type(error).__name__


@contextmanager
def bad_input_exits(prog: str) -> Iterator[None]:
    """Bad input (:data:`BAD_INPUT`) inside the block ends the process: ``prog: error: <message>`` on
    stderr, exit status 2, unless :func:`debugging`."""
    try:
        yield
    except BAD_INPUT as error:
        if debugging():
            raise
        print(f"{prog}: error: {one_line(error)} (traceback: add {DEBUG_FLAG})", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def run_tool(main: Callable[[list[str]], Any], prog: str, argv: Sequence[str] | None = None) -> None:
    """Call ``main(argv)`` (``argv`` less ``--debug``) inside :func:`bad_input_exits`."""
    args = take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    with bad_input_exits(prog):
        main(args)


__all__ = [
    "BAD_INPUT",
    "DEBUG_FLAG",
    "bad_input_exits",
    "debugging",
    "one_line",
    "run_tool",
    "take_debug_flag",
]
