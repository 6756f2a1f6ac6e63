"""`python -m reid.tools.visualize`: attention maps of a trained PASS-style run, and the ranked lists of a
finished run drawn again from its checkpoint on its test data (the same rows as the run drew)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid.data.records import DatasetInfo
from reid.tools.visualize import main as visualize
from reid.visualization.attention import display_size, picture_size
from tests.tools.trained_runs import untrained_run_folder
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


def _moved_run(pictured_run, tmp_path, started_in) -> Path:
    """A copy of the run whose config names its data relatively (the default ``./data``), started in
    ``started_in`` (``hydra.runtime.cwd`` of ``.hydra/hydra.yaml``, as Hydra records it)."""
    import shutil

    from omegaconf import OmegaConf

    run = tmp_path / "run"
    shutil.copytree(pictured_run, run)
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.paths.data_dir = "data"
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": {"runtime": {"cwd": str(started_in)}}}, run / ".hydra" / "hydra.yaml")
    return run


def test_ranked_reads_the_runs_data_from_the_folder_it_started_in_and_never_generates(
    pictured_run, tiny_data_dir, tmp_path, monkeypatch
):
    """Before, from another folder the relative ./data resolved there and a new synthetic dataset was
    rendered under it: the pictures showed other images than the run's."""
    started = tmp_path / "project"
    started.mkdir()
    (started / "data").symlink_to(tiny_data_dir, target_is_directory=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = _moved_run(pictured_run, tmp_path, started)
    written = visualize(["ranked", str(run), "--out", str(tmp_path / "pics"), "--worst", "1", "--best", "1"])
    assert written and not any(elsewhere.iterdir())
    (started / "data").unlink()
    with pytest.raises(FileNotFoundError, match="this tool reads data, it does not generate it"):
        visualize(["ranked", str(run), "--out", str(tmp_path / "pics")])
    assert not any(elsewhere.iterdir()) and sorted(p.name for p in started.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_cuda_without_a_device_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--device cuda"):
        visualize(["attention", str(tmp_path), "x.jpg", "--device", "cuda"])


def _random_people(tmp_path: Path, count: int = 1, size: tuple[int, int] = (64, 32)) -> list[str]:
    images = []
    for seed in range(count):
        pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
        images.append(str(tmp_path / f"person{seed}.jpg"))
        Image.fromarray(pixels).save(images[-1])
    return images


def test_a_pretraining_run_draws_each_heads_cls_map_and_any_layer_or_head(compose_config, tmp_path):
    """DINO's picture for a PASS pretraining run (its teacher, before: "feature extraction needs a
    supervised ... run"); the chosen block and head in the header; a bad choice names the range."""
    from matplotlib import colormaps

    from reid.visualization.attention import COLOUR_MAP, colour_bar_box, panels_size

    cfg = compose_config("experiment=pass_demo", "model=pass_tiny")
    run_dir = tmp_path / "pass_run"
    task = untrained_run_folder(cfg, None, run_dir, epoch=4)
    heads = task.teacher["backbone"].blocks[-1].attn.num_heads
    size = tuple(cfg.data.augment.global_size)
    (image,) = _random_people(tmp_path, size=size)
    (report,) = visualize(["attention", str(run_dir), image, "--heads"])
    assert report.picture.name == "attention_heads_person0_epoch5.png"  # 4 epochs done + the 5th's state
    picture = Image.open(report.picture).convert("RGB")
    display = display_size(size)
    assert picture.size == panels_size(1 + heads, display)
    x0, y0, x1, _ = colour_bar_box(1 + heads, display)
    top = tuple(int(255 * c) for c in colormaps[COLOUR_MAP](1.0)[:3])
    assert all(abs(a - b) <= 1 for a, b in zip(picture.getpixel(((x0 + x1) // 2, y0)), top))
    (chosen,) = visualize(["attention", str(run_dir), image, "--layer", "0", "--head", "1"])
    assert chosen.picture.name == "attention_person0_epoch5.png"
    with pytest.raises(ValueError, match=f"--head {heads}: the ViT has {heads} heads"):
        visualize(["attention", str(run_dir), image, "--head", str(heads)])
    with pytest.raises(ValueError, match="--layer 99: the ViT has"):
        visualize(["attention", str(run_dir), image, "--layer", "99"])


def test_a_cnn_run_gets_torchreids_activation_map(trained_run, tmp_path, capsys):
    """BoT has no attention (before: refused); the map is sum_c F_c^2 of the last stage, summing to 1."""
    from reid.inference import load_trained_model
    from reid.visualization.attention import activation_map, panels_size

    run_dir = trained_run("bot")
    (image,) = _random_people(tmp_path)
    (report,) = visualize(["attention", str(run_dir), image, "--out", str(tmp_path / "maps")])
    assert report.picture.name.startswith("activation_person0_epoch") and report.band_fractions == ()
    assert Image.open(report.picture).size == panels_size(2, display_size((64, 32)))
    assert "activation map" in capsys.readouterr().out
    model = load_trained_model(run_dir)
    batch = model.test_transform()(Image.open(image).convert("RGB"))[None]
    features = model.task.net.backbone.forward_features(batch)
    expected = features.pow(2).sum(1) / features.pow(2).sum()
    torch.testing.assert_close(activation_map(model.task.net.backbone, batch), expected)
    with pytest.raises(ValueError, match="--layer/--head/--heads choose ViT attention"):
        visualize(["attention", str(run_dir), image, "--heads", "--out", str(tmp_path / "maps")])
