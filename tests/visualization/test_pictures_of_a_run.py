"""A tiny run draws its pictures: ranked lists whose frames are where the images' labels say, the CMC
and mAP curves, the ranked list in wandb (offline), and an index.html showing every PNG (parsed)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from reid.callbacks.ranked_list import RankedListPictures
from reid.inference.name_labels import label_from_name
from reid.visualization.curves import FIGURE_SIZE, read_map_history
from reid.visualization.ranked_list import (
    BACKGROUND,
    FONT_SIZE,
    FRAME,
    FRAME_COLOURS,
    PAD,
    _legend_entries,
    cell_box,
    picture_size,
)
from reid.visualization.ranking import gallery_status
from tests.visualization.test_index_html import parse_page


def frame_colour(picture: Image.Image, box: tuple[int, int, int, int]) -> set[tuple[int, int, int]]:
    x0, y0, x1, y1 = box
    mid_x, mid_y, half = (x0 + x1) // 2, (y0 + y1) // 2, FRAME // 2
    points = ((mid_x, y0 + half), (mid_x, y1 - 1 - half), (x0 + half, mid_y), (x1 - 1 - half, mid_y))
    return {picture.getpixel(p) for p in points}


def test_ranked_lists_are_framed_as_the_labels_say(pictured_run):
    pictures = pictured_run / "pictures"
    shown = json.loads((pictures / "ranked_test_synthetic_epoch1.json").read_text())
    picture = Image.open(pictures / "ranked_test_synthetic_epoch1.png").convert("RGB")
    cell, rows = tuple(shown["cell"]), shown["rows"]
    assert cell == (64, 32) and len(rows) == 4  # 2 worst + 2 best
    assert picture.size == picture_size(len(rows), max(len(r["gallery"]) for r in rows), cell)
    statuses = []
    for r, row in enumerate(rows):
        query = label_from_name(
            row["query"]
        )  # Market-1501 names: identity and camera, independent of the code
        assert row["distances"] == sorted(row["distances"])
        camera = int(Path(row["query"]).name.split("_c")[1][0])  # c<N> of the name, 1-based
        assert f"cam {camera})" in row["title"]
        for k, (path, status) in enumerate(zip(row["gallery"], row["status"], strict=True), start=1):
            item = label_from_name(path)
            assert status == gallery_status(query.pid, query.camid, item.pid, item.camid), (
                row["title"],
                path,
            )
            assert frame_colour(picture, cell_box(r, k, cell)) == {FRAME_COLOURS[status] or BACKGROUND}
            statuses.append(status)
    assert "match" in statuses and "wrong" in statuses  # a top-30 list holds every query's first match
    assert rows[0]["title"].startswith("worst") and rows[-1]["title"].startswith("best")
    for x, _, colour in _legend_entries():  # the legend's swatches, in the frame colours
        assert picture.getpixel((x + FONT_SIZE // 2, PAD + 2 + FONT_SIZE // 2)) == colour
    assert [text for _, text, _ in _legend_entries()][:3] == [
        "query",
        "true match (other camera)",
        "wrong identity",
    ]


def test_curves_and_an_index_of_every_png(pictured_run):
    pictures = pictured_run / "pictures"
    names = {p.name for p in pictures.glob("*.png")}
    assert {"ranked_test_synthetic_epoch1.png", "cmc_test_epoch1.png", "map_per_epoch.png"} <= names
    for name in ("cmc_test_epoch1.png", "map_per_epoch.png"):
        assert Image.open(pictures / name).size == FIGURE_SIZE
    history = read_map_history(pictured_run / "csv" / "metrics.csv")
    assert [epoch for epoch, _ in history["val/mAP"]] == [1] and [e for e, _ in history["test/mAP"]] == [1]
    results = json.loads((pictured_run / "results.json").read_text())
    assert history["test/mAP"][0][1] == results["test"]["mAP"]
    page = parse_page(pictures / "index.html")
    assert sorted(page.images) == sorted(names)
    assert all((pictures / src).is_file() for src in page.links)


def test_wandb_offline_run_holds_the_ranked_list_image(pictured_run):
    (offline,) = (pictured_run / "wandb").glob("offline-run-*")
    images = list((offline / "files" / "media" / "images").rglob("*.png"))
    assert len(images) == 1 and "ranked_test" in str(images[0])
    assert (
        Image.open(images[0]).size
        == Image.open(pictured_run / "pictures" / "ranked_test_synthetic_epoch1.png").size
    )


def test_every_logger_with_log_image_gets_the_picture(tmp_path):
    calls = []

    class FakeLogger:
        def log_image(self, key, images, step=None, **kwargs):
            calls.append((key, images, step, kwargs))

    trainer = SimpleNamespace(loggers=[FakeLogger(), object()], global_step=7)
    image = Image.new("RGB", (3, 3))
    RankedListPictures._log_image(trainer, "pictures/ranked_test/market", image, "ranked_test_market_epoch2")
    assert calls == [("pictures/ranked_test/market", [image], 7, {"caption": ["ranked_test_market_epoch2"]})]


def test_a_module_without_evaluators_gets_no_ranked_list(tmp_path):
    callback = RankedListPictures(tmp_path / "pictures")
    trainer = SimpleNamespace(datamodule=None, loggers=[], is_global_zero=True)
    callback.on_test_epoch_end(trainer, SimpleNamespace())  # e.g. self-supervised pretraining
    callback.on_test_end(trainer, SimpleNamespace())
    assert not (tmp_path / "pictures").exists()


def test_bad_settings_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="callbacks.ranked_list.top_k=0"):
        RankedListPictures(tmp_path, top_k=0)
    with pytest.raises(ValueError, match="worst \\+ best"):
        RankedListPictures(tmp_path, worst=0, best=0)
    with pytest.raises(ValueError, match="cell"):
        RankedListPictures(tmp_path, cell=(0, 4))


def test_a_run_without_a_csv_logger_still_gets_its_map_curve(tmp_path):
    """logger=wandb alone: before, map_per_epoch.png was drawn only from the CSV logger's file. The
    callback records every evaluation's mAP itself (and keeps it in checkpoints, for a resumed run)."""
    from lightning.pytorch.trainer.states import TrainerFn

    callback = RankedListPictures(tmp_path / "pictures")
    for epoch, value in ((0, 10.0), (1, 20.0)):
        trainer = SimpleNamespace(
            state=SimpleNamespace(fn=TrainerFn.FITTING), current_epoch=epoch, sanity_checking=False,
            callback_metrics={"val/mAP": torch.tensor(value), "val/R1": torch.tensor(1.0)},
        )  # fmt: skip
        callback._record_map(trainer, "val")
    restored = RankedListPictures(tmp_path / "pictures")
    restored.load_state_dict(callback.state_dict())
    assert restored._map_history == {"val/mAP": [(1, 10.0), (2, 20.0)]}
    restored._draw_map_curve(SimpleNamespace(loggers=[]))
    assert Image.open(tmp_path / "pictures" / "map_per_epoch.png").size == FIGURE_SIZE
