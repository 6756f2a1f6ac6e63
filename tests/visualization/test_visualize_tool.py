"""`python -m reid.tools.visualize`: attention maps of a trained PASS-style run, and the ranked lists of a
finished run drawn again from its checkpoint on its test data (the same rows as the run drew)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from reid.data.records import DatasetInfo
from reid.tools.visualize import main as visualize
from reid.visualization.attention import display_size, picture_size
from tests.tools.conftest import untrained_run_folder
from tests.visualization.test_index_html import parse_page


def test_attention_tool_draws_one_map_per_part_token_with_its_band_share(
    pictured_run, tiny_data_dir, tmp_path, capsys
):
    images = [str(p) for p in sorted((tiny_data_dir / "synthetic_tiny" / "query").glob("*.jpg"))[:2]]
    assert len(images) == 2
    reports = visualize(["attention", str(pictured_run), *images, "--out", str(tmp_path / "maps")])
    printed = capsys.readouterr().out
    assert [r.image for r in reports] == images
    for report in reports:
        assert Image.open(report.picture).size == picture_size(
            3, display_size((64, 32))
        )  # image, [CLS], 3 parts
        assert len(report.band_fractions) == 3 and all(0.0 <= v <= 1.0 for v in report.band_fractions)
        line = next(line for line in printed.splitlines() if line.startswith(report.image))
        assert "part 1 (top half)" in line and "part 3 (bottom half)" in line
        assert f"{report.band_fractions[2]:.2f}" in line
    page = parse_page(tmp_path / "maps" / "index.html")
    assert sorted(page.images) == sorted(r.picture.name for r in reports)


def test_attention_of_a_cluster_contrast_run_is_its_cls_map(compose_config, tmp_path, capsys):
    """A USL run (experiment=usl_demo: ClusterContrastTask, the tiny ViT, no part tokens; its run folder
    as a run leaves it, the weights of a freshly built task) loads as a supervised one does: per image a
    picture of the image and its [CLS] map, and no band shares."""
    cfg = compose_config("experiment=usl_demo")
    run_dir = tmp_path / "usl_run"
    untrained_run_folder(cfg, DatasetInfo(num_classes=0, num_cameras=1, num_views=1), run_dir)
    images = []
    for seed in range(2):
        pixels = np.random.default_rng(seed).integers(0, 256, (64, 32, 3), dtype=np.uint8)
        images.append(str(tmp_path / f"person{seed}.jpg"))
        Image.fromarray(pixels).save(images[-1])
    reports = visualize(["attention", str(run_dir), *images])
    printed = capsys.readouterr().out
    assert [r.image for r in reports] == images and all(r.band_fractions == () for r in reports)
    for report in reports:
        assert report.picture.parent == run_dir / "pictures"
        assert Image.open(report.picture).size == picture_size(0, display_size((64, 32)))  # image, [CLS]
        assert f"{report.image}: no part tokens ([CLS] only) -> {report.picture}" in printed


def test_ranked_tool_redraws_the_run_s_ranked_lists(pictured_run, tmp_path):
    out = tmp_path / "again"
    written = visualize(
        ["ranked", str(pictured_run), "--out", str(out), "--worst", "2", "--best", "2", "--top-k", "30"]
    )
    names = {p.name for p in written}
    assert {"ranked_test_synthetic_epoch1.png", "cmc_test_epoch1.png", "map_per_epoch.png"} <= names
    again = json.loads((out / "ranked_test_synthetic_epoch1.json").read_text())["rows"]
    drawn = json.loads((pictured_run / "pictures" / "ranked_test_synthetic_epoch1.json").read_text())["rows"]
    assert [(r["title"], r["query"], r["gallery"], r["status"]) for r in again] == [
        (r["title"], r["query"], r["gallery"], r["status"]) for r in drawn
    ]  # the best checkpoint (results.json), the same test data: the same rows
    for a, b in zip(again, drawn, strict=True):
        assert a["distances"] == pytest.approx(b["distances"], abs=1e-5)
    assert sorted(parse_page(out / "index.html").images) == sorted(p.name for p in out.glob("*.png"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_cuda_without_a_device_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--device cuda"):
        visualize(["attention", str(tmp_path), "x.jpg", "--device", "cuda"])
