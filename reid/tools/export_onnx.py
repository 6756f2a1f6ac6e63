"""Export a trained run's retrieval feature to ONNX, with a parity check against PyTorch.

    python -m reid.tools.export_onnx outputs/demo/<run> demo.onnx --check
    python -m reid.tools.export_onnx <run> transreid.onnx --camera ids --check --check-images crops/

The graph is :class:`~reid.inference.features.FeatureExtractor`: the run's neck feature, flip-averaged
and L2-normalised as its ``eval`` says (the numbers ``reid.tools.extract`` writes). Inputs:

* ``images``: float32 ``[B, 3, H, W]``, the run's test transform applied: RGB resized (bicubic) to
  ``H x W``, scaled to [0, 1], then ``(x - mean) / std`` (metadata ``image_height``, ``image_width``,
  ``pixel_mean``, ``pixel_std``); ``B`` is dynamic.
* SIE models: by default none more, the camera-free graph (the mean SIE embedding: an image's camera
  need not be known, as in deployment on new cameras). ``--camera ids`` exports the graph of the official
  evaluation instead, taking ``camids`` int64 ``[B]`` (0-based training cameras; and ``viewids`` for a
  view SIE table). One graph per file: ONNX has no optional inputs, and a ``-1 = unknown`` convention
  would put a second SIE implementation in the graph. Models without SIE take images only.

Output ``features`` float32 ``[B, D]``. The metadata (``metadata_props``) also records the feature
dimension, normalisation, flip, metric, camera input and the checkpoint.

Exporter: the TorchScript one (``dynamo=False``, opset 17). The torch.export-based exporter (``dynamo=True``)
needs ``onnxscript`` and fails on the SIE id range check (``int(ids.min())``: a guard on data); the
TorchScript tracer records such input checks as constants, which is right for a fixed image size (their
``TracerWarning``s are silenced). The graph does not check ids then: one >= ``num_cameras`` (metadata) fails
in onnxruntime's Gather, but a negative one counts from the end (ONNX Gather semantics); check ids first.
``--check`` runs the graph in onnxruntime (CPU) on random images (batch 3, not the traced 2) and on up to
8 real images (``--check-images``), prints the largest absolute difference to PyTorch and fails above
``--atol`` (1e-4).
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reid.data.image_dataset import read_image
from reid.inference import FeatureExtractor, TrainedModel, add_run_arguments, load_trained_model
from reid.inference.image_files import collect_images

OPSET = 17
TRACE_BATCH = 2
CHECK_BATCH = 3
MAX_CHECK_IMAGES = 8


class OnnxGraph(nn.Module):
    """``forward(images, *ids)`` with the id inputs named by ``id_inputs`` (``camids``, ``viewids``)."""

    def __init__(self, extractor: FeatureExtractor, id_inputs: Sequence[str]) -> None:
        super().__init__()
        self.extractor = extractor
        self.id_inputs = tuple(id_inputs)

    def forward(self, images: Tensor, *ids: Tensor) -> Tensor:
        return self.extractor(images, **dict(zip(self.id_inputs, ids, strict=True)))


def id_inputs(model: TrainedModel, camera_ids: bool) -> tuple[str, ...]:
    """The id inputs of the graph: none (camera-free or no SIE), else those of the SIE table's sides."""
    if not camera_ids:
        return ()
    if model.camera_embed is None:
        raise ValueError(
            f"--camera ids: the model of {model.files.checkpoint} has no SIE; its graph takes images only "
            "(leave --camera out)"
        )
    return (("camids",) if model.uses_cameras else ()) + (("viewids",) if model.uses_views else ())


def example_inputs(model: TrainedModel, names: Sequence[str], batch: int, seed: int = 0) -> list[Tensor]:
    """Random images ``[batch, 3, H, W]`` and ids in the table's range, on the model's device."""
    generator = torch.Generator().manual_seed(seed)
    sizes = {"camids": model.data_info.num_cameras, "viewids": model.data_info.num_views}
    images = torch.randn(batch, 3, *model.image_size, generator=generator)
    ids = [torch.randint(0, sizes[name], (batch,), generator=generator) for name in names]
    return [t.to(model.task.device) for t in (images, *ids)]


def _metadata(model: TrainedModel, names: Sequence[str], feature_dim: int) -> dict[str, str]:
    info = model.description()
    camera = "camera ids (SIE rows of the given ids)" if names else "camera-free (mean SIE embedding)"
    return {
        "image_height": str(model.image_size[0]),
        "image_width": str(model.image_size[1]),
        "pixel_mean": json.dumps(info["pixel_mean"]),
        "pixel_std": json.dumps(info["pixel_std"]),
        "preprocessing": "RGB, bicubic resize to image_height x image_width, / 255, (x - mean) / std",
        "feature_dim": str(feature_dim),
        "normalized": str(info["normalized"]).lower(),
        "flip": str(info["flip"]).lower(),
        "metric": info["metric"],
        "camera_input": ",".join(names) or "none",
        "camera_mode": camera if model.camera_embed is not None else "no SIE (images only)",
        "num_cameras": str(info["num_cameras"]),
        "num_views": str(info["num_views"]),
        "model": info["model"],
        "checkpoint": info["checkpoint"],
        "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=False), opset {OPSET}",
    }


def export_onnx(model: TrainedModel, out: str | Path, camera_ids: bool = False) -> Path:
    """Write the feature graph of ``model`` to ``out`` (module docstring); returns the path."""
    import onnx

    out = Path(out)
    names = id_inputs(model, camera_ids)
    graph = OnnxGraph(FeatureExtractor(model.task, model.evaluation.normalize), names).eval()
    inputs = example_inputs(model, names, TRACE_BATCH)
    with torch.no_grad():
        feature_dim = int(graph(*inputs).shape[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    batch_axis = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # input checks, constant at a fixed size
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        # InstanceNorm (ICS stem, input_norm) has no running statistics: it uses the input's in eval too
        warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to train=True")
        torch.onnx.export(
            graph,
            tuple(inputs),
            str(out),
            dynamo=False,
            opset_version=OPSET,
            input_names=["images", *names],
            output_names=["features"],
            dynamic_axes={name: batch_axis for name in ("images", *names, "features")},
        )
    proto = onnx.load(str(out))
    proto.graph.output[0].type.tensor_type.shape.dim[
        1
    ].dim_value = feature_dim  # the tracer leaves it symbolic
    onnx.helper.set_model_props(proto, _metadata(model, names, feature_dim))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


def onnx_features(path: str | Path, inputs: Sequence[Tensor]) -> np.ndarray:
    """Run the graph at ``path`` in onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {arg.name: t.detach().cpu().numpy() for arg, t in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(["features"], feeds)[0]


def max_difference(
    model: TrainedModel, path: str | Path, inputs: Sequence[Tensor], camera_ids: bool
) -> float:
    """Largest ``|onnx - torch|`` over the features of ``inputs``."""
    graph = OnnxGraph(FeatureExtractor(model.task, model.evaluation.normalize), id_inputs(model, camera_ids))
    with torch.no_grad():
        expected = graph.eval()(*inputs).cpu().numpy()
    return float(np.abs(onnx_features(path, inputs) - expected).max())


def real_inputs(model: TrainedModel, source: str, camera_ids: bool) -> list[Tensor]:
    """Up to 8 images of ``source`` through the test transform; ids cycle over the table's range."""
    transform = model.test_transform()
    paths = collect_images(source)[:MAX_CHECK_IMAGES]
    images = torch.stack([transform(read_image(p)) for p in paths])
    sizes = {"camids": model.data_info.num_cameras, "viewids": model.data_info.num_views}
    ids = [torch.arange(len(paths)) % sizes[name] for name in id_inputs(model, camera_ids)]
    return [t.to(model.task.device) for t in (images, *ids)]


def check(model: TrainedModel, path: Path, camera_ids: bool, images: str | None) -> dict[str, float]:
    """``{"random": diff, "images": diff}`` (the latter with ``images``), printed."""
    names = id_inputs(model, camera_ids)
    found = {"random": max_difference(model, path, example_inputs(model, names, CHECK_BATCH, 1), camera_ids)}
    if images is not None:
        found["images"] = max_difference(model, path, real_inputs(model, images, camera_ids), camera_ids)
    for what, diff in found.items():
        print(f"onnxruntime vs PyTorch, {what}: max |difference| {diff:.3g}")
    return found


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m reid.tools.export_onnx", description=__doc__.split("\n\n")[0]
    )
    add_run_arguments(parser)
    parser.add_argument("output", help="the .onnx file to write")
    parser.add_argument("--camera", choices=("free", "ids"), default="free", help="SIE models: graph inputs")
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch (CPU)")
    parser.add_argument("--check-images", help="images for --check (implies it): folder, glob, list file")
    parser.add_argument("--atol", type=float, default=1e-4, help="--check fails above this difference")
    args = parser.parse_args(argv)
    if Path(args.output).suffix != ".onnx":
        raise ValueError(f"output {args.output}: expected a .onnx file name")
    model = load_trained_model(args.run, args.checkpoint, args.config, args.num_cameras, "cpu")
    camera_ids = args.camera == "ids"
    path = export_onnx(model, args.output, camera_ids)
    print(f"wrote {path} (inputs: images{''.join(', ' + n for n in id_inputs(model, camera_ids))})")
    found = check(model, path, camera_ids, args.check_images) if args.check or args.check_images else {}
    worst = max(found.values(), default=0.0)
    if worst > args.atol:
        raise SystemExit(f"--check: onnxruntime differs from PyTorch by {worst:.3g} > --atol {args.atol}")
    return {"path": str(path), **found}


if __name__ == "__main__":
    from reid.tools.cli import run_tool

    run_tool(main, "python -m reid.tools.export_onnx")
