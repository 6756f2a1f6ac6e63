"""LUPerson keep-lists in both formats: our text lists and TransReID-SSL's pickled ``CFS_list.pkl``.

The official reader (damo-cv/TransReID-SSL ``dino/main_dino.py``, read for this test): ``save_list =
pickle.load(open(args.filter_path, "rb"))``, then ``[os.path.join(data_path, 'images', i) for i in
save_list[:keep_num]]`` as the training samples, in that order (``--keep_num 2508146`` in
``dino/script/vit-*_cfs_lup.sh``). The same images, in the same order, are what ``load_luperson`` must
return; and unlike ``pickle.load`` it must not run what a malicious pickle asks for.
"""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from reid.config import CONFIG_DIR
from reid.data.datasets.errors import DatasetFormatError, DatasetLayoutError
from reid.data.datasets.luperson import load_luperson

from .trees import write_images

NAMES = ["10_scene3_7.jpg", "2_scene1_0.jpg", "5_scene2_4.jpg", "7_scene9_1.jpg"]


def official_layout(root: Path, names: list[str] = NAMES) -> Path:
    """TransReID-SSL's layout: ``LUP/images/<name>`` flat, ``LUP/CFS_list.pkl`` beside it."""
    write_images(root / "LUP" / "images", names)
    return root / "LUP"


def official_samples(data_path: Path, save_list: list[str], keep_num: int) -> list[str]:
    """main_dino.py's sample paths, as it builds them."""
    return [os.path.join(data_path, "images", name) for name in save_list[:keep_num]]


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("container", [list, tuple])
def test_the_official_cfs_pickle_gives_main_dinos_samples(tmp_path, protocol, container):
    folder = official_layout(tmp_path)
    order = [NAMES[2], NAMES[0], NAMES[3], NAMES[1]]  # by CFS score, not by name
    cfs = folder / "CFS_list.pkl"
    cfs.write_bytes(pickle.dumps(container(order), protocol=protocol))
    data = load_luperson(tmp_path, keep_list=cfs, keep_num=3)
    assert [r.path for r in data.train] == official_samples(folder, order, 3)
    assert len(load_luperson(tmp_path, keep_list=cfs).train) == 4  # keep_num null: every entry


class _Runs:
    """Pickles to a call of ``open(marker, "w")`` (``io.open``): what a malicious keep-list could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            lambda marker: [NAMES[0], _Runs(marker)],
            r"asks for io\.open; a keep-list pickle may hold only",
        ),
        (lambda marker: _Runs(marker), r"asks for io\.open"),
        (lambda marker: np.array(NAMES), r"asks for numpy"),
        (lambda marker: {"names": NAMES}, r"holds a dict; expected a list or tuple of image names"),
        (lambda marker: [NAMES[0], 7], r"entry 1 is a int \(7\); expected every entry to be an image name"),
        (lambda marker: [NAMES[0], NAMES[1].encode()], r"entry 1 is a bytes"),
    ],
)
def test_a_pickle_that_is_not_a_list_of_names_is_refused_without_running_it(tmp_path, content, expected):
    folder = official_layout(tmp_path)
    marker = tmp_path / "ran"
    cfs = folder / "CFS_list.pkl"
    cfs.write_bytes(pickle.dumps(content(marker)))
    with pytest.raises(DatasetFormatError, match=expected) as error:
        load_luperson(tmp_path, keep_list=cfs)
    assert str(cfs) in str(error.value)
    assert not marker.exists()  # pickle.load would have created it


def test_a_damaged_pickle_names_the_file(tmp_path):
    folder = official_layout(tmp_path)
    cfs = folder / "CFS_list.pkl"
    cfs.write_bytes(pickle.dumps(NAMES)[:-7])
    with pytest.raises(DatasetFormatError, match=f"keep-list {cfs}: not a readable pickle"):
        load_luperson(tmp_path, keep_list=cfs)


def test_keep_num_is_checked_and_applies_to_text_lists_too(tmp_path):
    folder = official_layout(tmp_path)
    text = folder / "keep.txt"
    text.write_text("".join(f"images/{name}\n" for name in NAMES))  # relative to the dataset folder
    assert [Path(r.path).name for r in load_luperson(tmp_path, text, keep_num=2).train] == NAMES[:2]
    with pytest.raises(DatasetFormatError, match=r"keep_num=5: the keep-list .* holds only 4 entries"):
        load_luperson(tmp_path, text, keep_num=5)
    with pytest.raises(DatasetFormatError, match=r"keep_num=0: expected an integer >= 1 or null"):
        load_luperson(tmp_path, text, keep_num=0)
    with pytest.raises(DatasetFormatError, match=r"keep_num=2 needs a keep-list"):
        load_luperson(tmp_path, keep_num=2)


def test_entries_that_are_nowhere_are_refused_naming_both_places(tmp_path):
    folder = official_layout(tmp_path)
    cfs = folder / "CFS_list.pkl"
    cfs.write_bytes(pickle.dumps(["missing.jpg", *NAMES]))
    with pytest.raises(
        DatasetLayoutError, match=rf"\[0\]: {folder}/missing.jpg is not a file .* {folder}/images"
    ):
        load_luperson(tmp_path, keep_list=cfs)


def test_the_config_keys_reach_the_loader(tmp_path):
    folder = official_layout(tmp_path)
    cfs = folder / "CFS_list.pkl"
    cfs.write_bytes(pickle.dumps(NAMES))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "run",
            overrides=[
                "experiment=dino_lup_vit_base_ics",
                f"data.dataset.root={tmp_path}",
                f"data.dataset.keep_list={cfs}",
                "data.dataset.keep_num=2",
            ],
        )
    data = instantiate(cfg.data.dataset)()
    assert [r.path for r in data.train] == official_samples(folder, NAMES, 2)
