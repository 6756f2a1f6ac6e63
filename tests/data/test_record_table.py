"""RecordTable: the records of a split in flat arrays, a drop-in ``Sequence[Record]`` that workers share."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from reid.data.image_dataset import ImageDataset
from reid.data.record_table import RecordTable
from reid.data.records import UNLABELLED, Record, ReIDDataset

RECORDS = [
    Record("/data/Market/bounding_box_train/0002_c1s1_000451_03.jpg", 0, 0),
    Record("/data/Market/bounding_box_train/0002_c2s1_000301_01.jpg", 0, 1, 2),
    Record("/data/Straße/é/0007_c6.jpg", 1, 5),  # non-ASCII
    Record(os.fsdecode(b"/data/latin1_\xe9.jpg"), 2, 3),  # not UTF-8: kept through surrogateescape
]


def test_a_table_is_the_list_of_records_it_was_built_from():
    table = RecordTable.from_records(RECORDS)
    assert len(table) == 4 and table == RECORDS and list(table) == RECORDS
    assert [table[i] for i in range(-4, 4)] == RECORDS + RECORDS
    assert table[1:3] == RECORDS[1:3] and isinstance(table[1:3], RecordTable)
    assert table[::-1] == RECORDS[::-1] and table[np.array([3, 0, 3])] == [RECORDS[3], RECORDS[0], RECORDS[3]]
    assert table.take(np.array([], dtype=np.int64)) == []
    assert table.path(2) == RECORDS[2].path and table.paths == [r.path for r in RECORDS]
    assert table.pids.tolist() == [0, 0, 1, 2] and table.camids.tolist() == [0, 1, 5, 3]
    assert table.viewids.tolist() == [0, 2, 0, 0]
    assert table + RECORDS[:1] == [*RECORDS, RECORDS[0]] and table[:2] + table[2:] == table
    assert RecordTable.from_records(table) is table
    with pytest.raises(IndexError, match="index 4 out of range for 4 records"):
        table[4]
    with pytest.raises(ValueError):  # immutable: a worker can never write a page it shares
        table.pids[0] = 5


def test_unlabelled_paths_and_pickling():
    table = RecordTable.from_paths(["/lup/a.jpg", "/lup/b/c.jpg"])
    assert table == [Record("/lup/a.jpg", UNLABELLED, 0), Record("/lup/b/c.jpg", UNLABELLED, 0)]
    assert pickle.loads(pickle.dumps(RecordTable.from_records(RECORDS))) == RECORDS  # spawned workers


def test_a_luperson_scale_index_is_compact():
    """Issue 31's measure: 672 MiB for LUPerson's 4.18M Records as a list; here the arrays hold the paths'
    bytes after their common prefix (stored once) plus 20 bytes an image (an int64 offset, three int32
    labels)."""
    paths = [f"/datasets/LUP/images/{i:07d}_scene{i % 46000:05d}.jpg" for i in range(100_000)]
    table = RecordTable.from_paths(paths)
    assert table.root == "/datasets/LUP/images/00" and table.paths == paths
    assert table.nbytes == sum(len(p) - len(table.root) for p in paths) + 8 * (len(paths) + 1) + 12 * len(
        paths
    )
    assert table.nbytes / len(paths) < 50  # 4.18M images: < 200 MiB, against 672 MiB of objects


def test_datasets_hold_tables_however_their_splits_are_given():
    data = ReIDDataset("toy", list(RECORDS), RECORDS[:1], [])
    assert all(isinstance(split, RecordTable) for split in (data.train, data.query, data.gallery))
    data.train = RECORDS[:2]  # assigned later too
    assert isinstance(data.train, RecordTable) and data.train == RECORDS[:2]
    assert (data.num_train_pids, data.num_cameras, data.num_views) == (1, 2, 3)
    assert "train   |       2 |      1 |   2" in data.summary()
    assert isinstance(ImageDataset(RECORDS, transform=lambda image: image).records, RecordTable)
