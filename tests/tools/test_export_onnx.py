"""`python -m reid.tools.export_onnx`: every family's feature graph (supervised and Cluster Contrast) runs in
onnxruntime as in PyTorch (<= 1e-4 on CPU), at a batch size other than the traced one, with its metadata."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from omegaconf import OmegaConf

from reid.data.image_dataset import read_image
from reid.data.records import DatasetInfo
from reid.inference import FeatureExtractor, load_trained_model
from reid.tools.export_onnx import (
    CHECK_BATCH,
    FP16_ATOL,
    TRACE_BATCH,
    GraphSpec,
    check,
    example_inputs,
    export_onnx,
    onnx_features,
)
from reid.tools.export_onnx import main as export_main
from reid.tools.extract import main as extract
from tests.tools.trained_runs import FAMILIES, untrained_run_folder

pytest.importorskip("onnxruntime")  # a guard only: the dev extra installs it

ATOL = 1e-4


@pytest.fixture(scope="module")
def query_folder(tiny_data_dir: Path) -> str:
    return str(tiny_data_dir / "synthetic_tiny" / "query")


def _inputs(path: Path) -> dict[str, list[str | int]]:
    """The graph's inputs and their shapes (a named axis is dynamic)."""
    graph = onnx.load(str(path))
    return {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input
    }


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_camera_free_graph_matches_pytorch(
    family: str, trained_run, query_folder: str, tmp_path: Path
) -> None:
    """Random images at batch 3 (traced at 2) and real query images: max |onnx - torch| <= 1e-4; the graph
    takes images only (camera-free for SIE models) with a dynamic batch axis; metadata props describe it."""
    run_dir = trained_run(family)
    out = tmp_path / f"{family}.onnx"
    found = export_main([str(run_dir), str(out), "--check", "--check-images", query_folder])
    assert found["random"] <= ATOL and found["images"] <= ATOL
    assert CHECK_BATCH != TRACE_BATCH
    model = load_trained_model(run_dir)
    proto = onnx.load(str(out))
    assert _inputs(out) == {"images": ["batch", 3, *model.image_size]}
    meta = {p.key: p.value for p in proto.metadata_props}
    dim = int(meta["feature_dim"])
    assert [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [
        "batch",
        dim,
    ]
    assert (meta["image_height"], meta["image_width"]) == tuple(str(v) for v in model.image_size)
    assert (
        json.loads(meta["pixel_mean"]) == list(model.pixel_mean)
        and json.loads(meta["pixel_std"]) == [0.5] * 3
    )
    assert meta["normalized"] == "true" and meta["camera_input"] == "none"
    one = onnx_features(out, example_inputs(model, (), 1)[:1])  # batch 1 too
    assert one.shape == (1, dim) and np.allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-5)


def test_sie_graph_with_camera_ids(trained_run, query_folder: str, tmp_path: Path) -> None:
    """``--camera ids``: inputs images + camids int64 [B]; matches PyTorch with the ids, differs from the
    camera-free graph; the camera-free graph gives the features ``reid.tools.extract`` writes."""
    run_dir = trained_run("transreid")
    model = load_trained_model(run_dir)
    with_ids, free = tmp_path / "ids.onnx", tmp_path / "free.onnx"
    found = export_main([str(run_dir), str(with_ids), "--camera", "ids", "--check-images", query_folder])
    assert found["random"] <= ATOL and found["images"] <= ATOL
    assert _inputs(with_ids) == {"images": ["batch", 3, 64, 32], "camids": ["batch"]}
    proto = onnx.load(str(with_ids))
    assert proto.graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert {p.key: p.value for p in proto.metadata_props}["camera_input"] == "camids"
    export_onnx(model, free)
    images, camids = example_inputs(model, ("camids",), 4, seed=3)
    assert np.abs(onnx_features(with_ids, [images, camids]) - onnx_features(free, [images])).max() > 1e-3
    for camera in range(3):  # every row of the table, not just the traced ids
        ids = torch.full((4,), camera)
        with torch.no_grad():
            expected = FeatureExtractor(model.task, normalize=True)(images, ids).numpy()
        assert np.abs(onnx_features(with_ids, [images, ids]) - expected).max() <= ATOL

    extracted = extract([str(run_dir), query_folder, str(tmp_path / "f.npy"), "--no-progress"])
    transform = model.test_transform()
    batch = torch.stack([transform(read_image(p)) for p in extracted.paths])
    assert np.abs(onnx_features(free, [batch]) - extracted.features.numpy()).max() <= ATOL


def test_bad_requests_fail_with_a_reason(trained_run, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no SIE; its graph takes images only"):
        export_main([str(trained_run("vit")), str(tmp_path / "m.onnx"), "--camera", "ids"])
    with pytest.raises(ValueError, match=r"expected a \.onnx file name"):
        export_main([str(trained_run("vit")), str(tmp_path / "m.pt")])


def test_camera_and_view_sie_needs_the_camera_count_and_takes_viewids(trained_run, tmp_path: Path) -> None:
    """A VeRi-like table of 3 cameras x 2 views (6 rows): loading needs ``--num-cameras``; the ids graph
    takes ``camids`` and ``viewids`` and matches PyTorch."""
    cfg = OmegaConf.load(trained_run("transreid") / ".hydra" / "config.yaml")
    cfg.model.sie.view = True
    run_dir = tmp_path / "veri_like"
    info = DatasetInfo(num_classes=8, num_cameras=3, num_views=2)
    sie = {"sie": OmegaConf.to_container(cfg.model.sie)}  # what the checkpoint of such a run holds
    task = untrained_run_folder(cfg, info, run_dir, hyper_parameters=sie)
    assert task.net.backbone.sie_embed.shape[0] == 6
    out = tmp_path / "veri.onnx"
    with pytest.raises(ValueError, match="--num-cameras"):
        export_main([str(run_dir), str(out)])
    found = export_main([str(run_dir), str(out), "--num-cameras", "3", "--camera", "ids", "--check"])
    assert found["random"] <= ATOL
    assert _inputs(out) == {"images": ["batch", 3, 64, 32], "camids": ["batch"], "viewids": ["batch"]}
    assert load_trained_model(run_dir, num_cameras=3).data_info == info


def test_flip_averaged_feature_exports(trained_run, query_folder: str, tmp_path: Path) -> None:
    """``eval.flip=true``: the graph holds both passes, ``(f(x) + f(flip(x))) / 2``, and matches PyTorch."""
    model = load_trained_model(trained_run("transreid"))
    model.evaluation = model.task.evaluation = dataclasses.replace(model.evaluation, flip=True)
    path = export_onnx(model, tmp_path / "flip.onnx")
    found = check(model, path, GraphSpec(), images=query_folder)
    assert found["random"].max_difference <= ATOL and found["images"].max_difference <= ATOL
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["flip"] == "true"
    images = example_inputs(model, (), 2)
    assert (
        np.abs(onnx_features(path, images) - onnx_features(tmp_path / "flip.onnx", [images[0].flip(3)])).max()
        < 1e-5
    )


def _opset(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize(("family", "opset"), [("transreid", 14), ("bot", 11)])
def test_opset_and_input_size_are_options(family: str, opset: int, trained_run, query_folder, tmp_path):
    """``--opset`` writes that opset; ``--image-size 96 48`` (trained at 64 x 32) gives a graph of that
    input whose features are PyTorch's at that size (the ViT on its resized position grid, SIE + JPM
    included; the ResNet pools any size) and the metadata says both sizes."""
    run_dir = trained_run(family)
    out = tmp_path / "sized.onnx"
    args = [str(run_dir), str(out), "--opset", str(opset), "--image-size", "96", "48"]
    found = export_main([*args, "--check-images", query_folder])
    assert found["random"] <= ATOL and found["images"] <= ATOL
    assert _opset(out) == opset and _inputs(out) == {"images": ["batch", 3, 96, 48]}
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert (meta["image_height"], meta["image_width"], meta["trained_image_size"]) == ("96", "48", "64x32")
    model = load_trained_model(run_dir)
    images = torch.randn(2, 3, 96, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = FeatureExtractor(model.task, normalize=True)(images).numpy()
    assert np.abs(onnx_features(out, [images]) - expected).max() <= ATOL
    default = tmp_path / "default.onnx"
    export_main([str(run_dir), str(default)])
    assert _opset(default) == 17 and _inputs(default) == {"images": ["batch", 3, 64, 32]}


def test_an_opset_the_model_cannot_use_is_one_line_naming_it(trained_run, tmp_path: Path) -> None:
    """A ViT needs opset 14 (scaled_dot_product_attention): at 13 the exporter's reason is given; opsets
    the exporter does not write, a bad size and a bad dtype are refused before the model loads."""
    run = str(trained_run("vit"))
    needs_14 = "--opset 13: the model cannot be exported.*scaled_dot_product_attention"
    with pytest.raises(ValueError, match=needs_14):
        export_main([run, str(tmp_path / "a.onnx"), "--opset", "13"])
    with pytest.raises(ValueError, match="--opset 21: the TorchScript exporter writes opsets 9 to 20"):
        export_main([run, str(tmp_path / "a.onnx"), "--opset", "21"])
    with pytest.raises(ValueError, match="--image-size .*two positive integers"):
        export_main([run, str(tmp_path / "a.onnx"), "--image-size", "0", "32"])
    with pytest.raises(SystemExit):  # argparse: invalid choice
        export_main([run, str(tmp_path / "a.onnx"), "--dtype", "int8"])


@pytest.mark.parametrize("family", ["transreid", "bot", "usl_vit"])
def test_fp16_export_has_its_own_parity_figure(family: str, trained_run, query_folder, tmp_path, capsys):
    """``--dtype float16``: fp16 input, weights and output; compared with the float32 PyTorch feature its
    difference is fp16 rounding (above 1e-6: the graph really computes in half; below the fp16 tolerance),
    the cosine stays above 0.9999, and the PyTorch model it came from stays float32."""
    run_dir = trained_run(family)
    out = tmp_path / "half.onnx"
    found = export_main([str(run_dir), str(out), "--dtype", "float16", "--check-images", query_folder])
    assert 1e-6 < found["random"] <= FP16_ATOL and 1e-6 < found["images"] <= FP16_ATOL
    printed = capsys.readouterr().out
    assert "onnxruntime (float16) vs PyTorch (float32), images: max |difference|" in printed
    cosines = [float(line.rsplit(" ", 1)[1]) for line in printed.splitlines() if "min cosine" in line]
    assert len(cosines) == 2 and min(cosines) > 0.9999
    proto = onnx.load(str(out))
    half = onnx.TensorProto.FLOAT16
    assert proto.graph.input[0].type.tensor_type.elem_type == half
    assert proto.graph.output[0].type.tensor_type.elem_type == half
    assert {p.key: p.value for p in proto.metadata_props}["dtype"] == "float16"
    with pytest.raises(SystemExit, match="differs from PyTorch by .* > --atol 1e-07"):
        export_main([str(run_dir), str(out), "--dtype", "float16", "--check", "--atol", "1e-7"])
    model = load_trained_model(run_dir)
    spec = GraphSpec(dtype="float16")
    export_onnx(model, tmp_path / "again.onnx", spec)
    assert all(p.dtype == torch.float32 for p in model.task.parameters())
