"""Records held as flat arrays: one bytes buffer of paths with its offsets, and int arrays of labels.

A Python list of :class:`~reid.data.records.Record` costs about 160 bytes an image (the object, its path
string, its list slot): 672 MiB for LUPerson's 4.18M crops. Worse, every DataLoader worker that reads
such a list writes to each object it touches (reference counts), so the copy-on-write pages it shares
with the main process become private copies, once per worker: ~50 GiB for 8 GPUs x 10 workers. A
:class:`RecordTable` holds the same records in five numpy arrays: ``paths``, the concatenated bytes of
each ``os.fsencode(path)`` after a ``root`` prefix the table stores once, with ``offsets`` [N + 1] (int64),
and ``pids``, ``camids``, ``viewids`` [N] (int32). That is the relative path's bytes plus 20 bytes an
image, and a worker reading item ``i`` only reads the arrays' pages, so they stay shared. ``table[i]``
builds the :class:`Record` on demand; a slice or an index array gives a table.

It is a ``Sequence[Record]``: code that iterates, indexes or measures a list of records takes a table as
it is. Every dataset keeps its splits as tables (:class:`~reid.data.records.ReIDDataset` converts lists).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from reid.data.records import UNLABELLED, Record


class RecordTable(Sequence[Record]):
    """Records ``0..N-1`` in flat arrays (module docstring); immutable."""

    __slots__ = ("_offsets", "_paths", "camids", "pids", "root", "viewids")

    def __init__(
        self,
        paths: np.ndarray,
        offsets: np.ndarray,
        pids: np.ndarray,
        camids: np.ndarray,
        viewids: np.ndarray,
        root: str = "",
    ) -> None:
        count = len(offsets) - 1
        if count < 0 or any(len(a) != count for a in (pids, camids, viewids)):
            raise ValueError(
                f"RecordTable: {len(offsets)} offsets for {len(pids)} pids, {len(camids)} camids, "
                f"{len(viewids)} viewids; expected N + 1 offsets and N of each label"
            )
        self._paths, self._offsets, self.root = paths, offsets, root
        self.pids, self.camids, self.viewids = pids, camids, viewids
        for array in (paths, offsets, pids, camids, viewids):
            array.flags.writeable = False

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str],
        pids: Sequence[int] | np.ndarray | None = None,
        camids: Sequence[int] | np.ndarray | None = None,
        viewids: Sequence[int] | np.ndarray | None = None,
        root: str | None = None,
    ) -> RecordTable:
        """A table of ``paths`` with the given labels (default: unlabelled, camera 0, view 0). ``root``: a
        prefix of every path, stored once (``paths`` are then relative to it: the path of ``i`` is
        ``root + paths[i]``); default the paths' common prefix."""
        if root is None:
            # a string prefix (not path components): the path of i is root + the rest, whatever they are
            root = os.path.commonprefix(list(paths)) if len(paths) > 1 else ""  # noqa: RUF071
            paths = [path[len(root) :] for path in paths] if root else paths
        joined = "".join(paths)
        lengths = np.fromiter(map(len, paths), dtype=np.int64, count=len(paths))
        if joined.isascii():  # one encode: 4.18M names in a second, no per-path bytes objects
            blob = np.frombuffer(joined.encode("ascii"), dtype=np.uint8).copy()
        else:
            encoded = [os.fsencode(path) for path in paths]
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        offsets = np.zeros(len(paths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])

        def labels(values: Sequence[int] | np.ndarray | None, default: int) -> np.ndarray:
            if values is None:
                return np.full(len(paths), default, dtype=np.int32)
            return np.asarray(values, dtype=np.int32).copy()

        return cls(blob, offsets, labels(pids, UNLABELLED), labels(camids, 0), labels(viewids, 0), root)

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> RecordTable:
        """A table of the same records, in order."""
        if isinstance(records, RecordTable):
            return records
        records = list(records)
        return cls.from_paths(
            [r.path for r in records],
            [r.pid for r in records],
            [r.camid for r in records],
            [r.viewid for r in records],
        )

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def path(self, index: int) -> str:
        """The path of record ``index`` (negative counts from the end)."""
        index = self._position(index)
        start, end = self._offsets[index], self._offsets[index + 1]
        return self.root + os.fsdecode(self._paths[start:end].tobytes())

    @property
    def paths(self) -> list[str]:
        """Every path, in order (a list of N strings: for checks and messages, not for workers)."""
        return [self.path(i) for i in range(len(self))]

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> RecordTable: ...

    def __getitem__(self, index: Any) -> Record | RecordTable:
        if isinstance(index, int | np.integer):
            position = self._position(int(index))
            return Record(
                self.path(position),
                int(self.pids[position]),
                int(self.camids[position]),
                int(self.viewids[position]),
            )
        chosen = (
            np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        )
        return self.take(chosen)

    def take(self, indices: np.ndarray) -> RecordTable:
        """The records at ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"RecordTable: indices outside 0..{len(self) - 1}")
        indices = indices % max(len(self), 1)
        starts, ends = self._offsets[indices], self._offsets[indices + 1]
        lengths = ends - starts
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return RecordTable(
            self._paths[gather],
            offsets,
            self.pids[indices].copy(),
            self.camids[indices].copy(),
            self.viewids[indices].copy(),
            self.root,
        )

    def _position(self, index: int) -> int:
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"RecordTable index {index} out of range for {count} records")
        return index % count

    def __iter__(self) -> Iterator[Record]:
        for index in range(len(self)):
            yield self[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordTable) and self.root == other.root:
            return (
                len(self) == len(other)
                and np.array_equal(self._offsets, other._offsets)
                and np.array_equal(self._paths, other._paths)
                and all(np.array_equal(a, b) for a, b in zip(self._labels(), other._labels(), strict=True))
            )
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking container semantics, as a list

    def _labels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.pids, self.camids, self.viewids

    def __add__(self, other: Iterable[Record]) -> RecordTable:
        other = RecordTable.from_records(other)
        if other.root != self.root:
            return RecordTable.from_records([*self, *other])
        offsets = np.concatenate([self._offsets, other._offsets[1:] + self._offsets[-1]])
        pids, camids, viewids = (
            np.concatenate([a, b]) for a, b in zip(self._labels(), other._labels(), strict=True)
        )
        return RecordTable(
            np.concatenate([self._paths, other._paths]), offsets, pids, camids, viewids, self.root
        )

    def __repr__(self) -> str:
        shown = ", ".join(repr(self[i]) for i in range(min(len(self), 2)))
        more = ", ..." if len(self) > 2 else ""
        return f"RecordTable({len(self)} records: [{shown}{more}])"

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(a.nbytes for a in (self._paths, self._offsets, *self._labels()))

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._paths, self._offsets, *self._labels(), self.root)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        paths, offsets, pids, camids, viewids, root = state
        RecordTable.__init__(
            self,
            np.array(paths),
            np.array(offsets),
            np.array(pids),
            np.array(camids),
            np.array(viewids),
            root,
        )
