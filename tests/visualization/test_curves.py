"""CMC and mAP-per-epoch pictures: values read from a fabricated metrics.csv, PNG sizes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from reid.evaluation.rank import RankResult
from reid.visualization.curves import FIGURE_SIZE, read_map_history, save_cmc_curve, save_map_curve


def write_metrics(path: Path, rows: list[dict[str, str]]) -> Path:
    """A Lightning-CSVLogger-like file: one row per logging call, empty cells elsewhere."""
    names = sorted({key for row in rows for key in row})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_map_history_per_target_with_epochs_completed(tmp_path):
    rows = [
        {
            "epoch": "0",
            "step": "0",
            "test/mAP": "1.5",
            "test/a/mAP": "1.5",
            "test/b/mAP": "2.0",
        },  # before fit
        {"epoch": "0", "step": "3", "train/loss": "4.0"},
        {"epoch": "0", "step": "5", "val/mAP": "10", "val/a/mAP": "10", "val/b/mAP": "20", "val/R1": "3"},
        {"epoch": "1", "step": "11", "val/mAP": "12", "val/a/mAP": "12", "val/b/mAP": "25"},
        {"epoch": "2", "step": "12", "test/mAP": "12", "test/a/mAP": "12", "test/b/mAP": "25"},  # after fit
    ]
    history = read_map_history(write_metrics(tmp_path / "metrics.csv", rows))
    # the plain names copy the first target's: left out when per-target names exist
    assert history == {
        "test/a/mAP": [(0, 1.5), (2, 12.0)],
        "test/b/mAP": [(0, 2.0), (2, 25.0)],
        "val/a/mAP": [(1, 10.0), (2, 12.0)],  # a validation row of epoch e (0-based) comes after e + 1 epochs
        "val/b/mAP": [(1, 20.0), (2, 25.0)],
    }
    path = save_map_curve(history, tmp_path / "map.png")
    assert Image.open(path).size == FIGURE_SIZE


def test_map_history_of_one_target_keeps_the_plain_names(tmp_path):
    rows = [{"epoch": "0", "step": "5", "val/mAP": "7.5"}, {"epoch": "1", "step": "6", "test/mAP": "8"}]
    assert read_map_history(write_metrics(tmp_path / "m.csv", rows)) == {
        "val/mAP": [(1, 7.5)],
        "test/mAP": [(1, 8.0)],
    }


def test_map_history_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        read_map_history(tmp_path / "nothing.csv")
    with pytest.raises(ValueError, match="'epoch'"):
        read_map_history(write_metrics(tmp_path / "x.csv", [{"step": "1", "val/mAP": "2"}]))
    with pytest.raises(ValueError, match="no mAP values"):
        save_map_curve({"val/mAP": []}, tmp_path / "empty.png")


def test_cmc_curve_picture(tmp_path):
    cmc = torch.tensor([0.5, 0.75, 1.0, 1.0])
    results = {"a": RankResult(0.6, 0.4, cmc, 4, 4), "b": RankResult(0.3, 0.2, cmc * 0.5, 4, 5)}
    path = save_cmc_curve(results, tmp_path / "cmc.png")
    picture = Image.open(path)
    assert picture.size == FIGURE_SIZE and picture.format == "PNG"
    with pytest.raises(ValueError, match="no evaluation results"):
        save_cmc_curve({}, tmp_path / "none.png")


def test_a_target_has_one_colour_in_every_curve_of_a_run(tmp_path, monkeypatch):
    """CMC and mAP-per-epoch of a run with two targets: each target's lines share a colour across the two
    pictures, and the two targets differ (before, matplotlib's cycle coloured each plot on its own: the
    mAP plot's val and test series of one target took two colours)."""
    import reid.visualization.curves as curves

    drawn = {}
    monkeypatch.setattr(curves, "_save", lambda figure, path: drawn.setdefault(path.name, figure) and path)
    cmc = torch.tensor([0.5, 0.75, 1.0, 1.0])
    results = {"market": RankResult(0.6, 0.4, cmc, 4, 4), "duke": RankResult(0.3, 0.2, cmc * 0.5, 4, 5)}
    save_cmc_curve(results, tmp_path / "cmc.png")
    history = {
        "val/duke/mAP": [(1, 10.0), (2, 12.0)], "val/market/mAP": [(1, 20.0), (2, 25.0)],
        "test/market/mAP": [(2, 24.0)], "test/duke/mAP": [(2, 11.0)],
    }  # fmt: skip
    save_map_curve(history, tmp_path / "map.png")
    cmc_lines = drawn["cmc.png"].axes[0].lines
    cmc_colours = {line.get_label().split(":")[0]: line.get_color() for line in cmc_lines}
    map_colours = {line.get_label(): line.get_color() for line in drawn["map.png"].axes[0].lines}
    assert cmc_colours["market"] != cmc_colours["duke"]
    for target in ("market", "duke"):
        assert map_colours[f"val/{target}/mAP"] == map_colours[f"test/{target}/mAP"] == cmc_colours[target]
