"""Export a trained run's retrieval feature to ONNX, with a parity check against PyTorch.

    python -m reid.tools.export_onnx outputs/demo/<run> demo.onnx --check
    python -m reid.tools.export_onnx <run> transreid.onnx --camera ids --check --check-images crops/
    python -m reid.tools.export_onnx <run> fp16.onnx --dtype float16 --opset 18 --image-size 384 128 --check

The graph is :class:`~reid.inference.features.FeatureExtractor`: the run's neck feature, flip-averaged
and L2-normalised as its ``eval`` says (the numbers ``reid.tools.extract`` writes). Inputs:

* ``images``: ``[B, 3, H, W]`` (float32, or float16 with ``--dtype float16``), the run's test transform
  applied: RGB resized (bicubic) to ``H x W``, scaled to [0, 1], then ``(x - mean) / std`` (metadata
  ``image_height``, ``image_width``, ``pixel_mean``, ``pixel_std``); ``B`` is dynamic. ``H x W`` is the
  run's ``data.image_size`` unless ``--image-size`` gives another: a CNN pools any size; a ViT resizes its
  patch position table to the new grid (bilinear, as it does for DINO's local crops and as the official
  ``resize_pos_embed``), computed once at export, so the graph holds the resized table. A size the model
  was not trained at changes the features: the check compares with PyTorch at the same size.
* SIE models: by default none more, the camera-free graph (the mean SIE embedding: an image's camera
  need not be known, as in deployment on new cameras). ``--camera ids`` exports the graph of the official
  evaluation instead, taking ``camids`` int64 ``[B]`` (0-based training cameras; and ``viewids`` for a
  view SIE table). One graph per file: ONNX has no optional inputs, and a ``-1 = unknown`` convention
  would put a second SIE implementation in the graph. Models without SIE take images only.

Output ``features`` ``[B, D]`` in the graph's dtype. The metadata (``metadata_props``) also records the
feature dimension, normalisation, flip, metric, camera input, dtype, opset, the size the run was trained
at and the checkpoint.

``--dtype float16`` traces the model with its weights in half precision (every op in fp16: what TensorRT /
onnxruntime-gpu run at half the memory); its numbers differ from the float32 model's by fp16 rounding, so
its check compares with the float32 PyTorch features, reports the smallest cosine too, and has its own
tolerance (``--atol``, default :data:`FP16_ATOL` instead of :data:`FP32_ATOL`).

Exporter: the TorchScript one (``dynamo=False``; ``--opset`` from :data:`MIN_OPSET` to
:data:`MAX_OPSET`, default :data:`OPSET`; a ViT needs 14, for ``scaled_dot_product_attention``). The
torch.export-based exporter (``dynamo=True``) needs ``onnxscript`` and fails on the SIE id range check
(``int(ids.min())``: a guard on data); the TorchScript tracer records such input checks as constants, which
is right for a fixed image size (their ``TracerWarning``s are silenced). The graph does not check ids then:
one >= ``num_cameras`` (metadata) fails in onnxruntime's Gather, but a negative one counts from the end
(ONNX Gather semantics); check ids first. ``--check`` runs the graph in onnxruntime (CPU) on random images
(batch 3, not the traced 2) and on up to 8 real images (``--check-images``), prints the largest absolute
difference to PyTorch and fails above ``--atol``.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reid.data.image_dataset import read_image
from reid.inference import FeatureExtractor, TrainedModel, add_run_arguments, load_trained_model
from reid.inference.image_files import collect_images

OPSET = 17
MIN_OPSET = 9
MAX_OPSET = 20
"""The opsets the TorchScript exporter writes (``torch.onnx``'s ``ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET``)."""
DTYPES = {"float32": torch.float32, "float16": torch.float16}
FP32_ATOL = 1e-4
FP16_ATOL = 5e-3
"""Default ``--atol`` per dtype: fp16 rounds each of the model's ops to 11 significant bits; on unit-length
features the tiny runs of the tests land near 3e-4."""
TRACE_BATCH = 2
CHECK_BATCH = 3
MAX_CHECK_IMAGES = 8


@dataclass(frozen=True)
class GraphSpec:
    """What the exported graph takes: camera ids or not, its input size (``None``: the run's), its dtype
    and the opset it is written in."""

    camera_ids: bool = False
    image_size: tuple[int, int] | None = None
    dtype: str = "float32"
    opset: int = OPSET

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype {self.dtype}: expected one of {', '.join(DTYPES)}")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(
                f"--opset {self.opset}: the TorchScript exporter writes opsets {MIN_OPSET} to {MAX_OPSET}"
            )
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ValueError(f"--image-size {self.image_size}: expected two positive integers H W")

    def size(self, model: TrainedModel) -> tuple[int, int]:
        """The graph's input ``(H, W)``."""
        return self.image_size if self.image_size is not None else model.image_size


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


def example_inputs(
    model: TrainedModel, names: Sequence[str], batch: int, seed: int = 0, size: tuple[int, int] | None = None
) -> list[Tensor]:
    """Random float32 images ``[batch, 3, H, W]`` (``size``, default the run's) and ids in the table's range,
    on the model's device."""
    generator = torch.Generator().manual_seed(seed)
    sizes = {"camids": model.data_info.num_cameras, "viewids": model.data_info.num_views}
    images = torch.randn(batch, 3, *(size or model.image_size), generator=generator)
    ids = [torch.randint(0, sizes[name], (batch,), generator=generator) for name in names]
    return [t.to(model.task.device) for t in (images, *ids)]


def _metadata(model: TrainedModel, spec: GraphSpec, feature_dim: int) -> dict[str, str]:
    info = model.description()
    names = id_inputs(model, spec.camera_ids)
    camera = "camera ids (SIE rows of the given ids)" if names else "camera-free (mean SIE embedding)"
    height, width = spec.size(model)
    return {
        "image_height": str(height),
        "image_width": str(width),
        "trained_image_size": f"{model.image_size[0]}x{model.image_size[1]}",
        "dtype": spec.dtype,
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
        "opset": str(spec.opset),
        "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=False), opset {spec.opset}",
    }


def graph_of(model: TrainedModel, spec: GraphSpec) -> OnnxGraph:
    """The module that is traced: the run's feature with the id inputs of ``spec``, in its dtype (a half
    copy for float16; the model itself is left as it is)."""
    extractor = FeatureExtractor(model.task, model.evaluation.normalize)
    if spec.dtype != "float32":
        extractor = copy.deepcopy(extractor).to(DTYPES[spec.dtype])
    return OnnxGraph(extractor, id_inputs(model, spec.camera_ids)).eval()


def as_graph_inputs(inputs: Sequence[Tensor], spec: GraphSpec) -> list[Tensor]:
    """``inputs`` with the images in the graph's dtype (ids stay int64)."""
    return [inputs[0].to(DTYPES[spec.dtype]), *inputs[1:]]


def export_onnx(model: TrainedModel, out: str | Path, spec: GraphSpec | None = None) -> Path:
    """Write the feature graph of ``model`` to ``out`` as ``spec`` says (module docstring); returns the
    path. An op the opset cannot express is an error naming the opset and the exporter's reason."""
    import onnx

    spec = spec or GraphSpec()
    out = Path(out)
    names = id_inputs(model, spec.camera_ids)
    graph = graph_of(model, spec)
    inputs = as_graph_inputs(example_inputs(model, names, TRACE_BATCH, size=spec.size(model)), spec)
    with torch.no_grad():
        feature_dim = int(graph(*inputs).shape[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    batch_axis = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # input checks, constant at a fixed size
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        # InstanceNorm (ICS stem, input_norm) has no running statistics: it uses the input's in eval too
        warnings.filterwarnings("ignore", message=".*operator 'instance_norm' is set to train=True")
        try:
            torch.onnx.export(
                graph,
                tuple(inputs),
                str(out),
                dynamo=False,
                opset_version=spec.opset,
                input_names=["images", *names],
                output_names=["features"],
                dynamic_axes={name: batch_axis for name in ("images", *names, "features")},
            )
        except torch.onnx.errors.OnnxExporterError as error:  # e.g. an op newer than the opset
            reason = str(error).strip().splitlines()[0]
            raise ValueError(f"--opset {spec.opset}: the model cannot be exported ({reason})") from error
    proto = onnx.load(str(out))
    proto.graph.output[0].type.tensor_type.shape.dim[
        1
    ].dim_value = feature_dim  # the tracer leaves it symbolic
    onnx.helper.set_model_props(proto, _metadata(model, spec, feature_dim))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


def onnx_features(path: str | Path, inputs: Sequence[Tensor]) -> np.ndarray:
    """Run the graph at ``path`` in onnxruntime on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # fp16 graphs: "no CPU kernel to constant-fold ReduceMean" is not ours
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {arg.name: t.detach().cpu().numpy() for arg, t in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(["features"], feeds)[0]


@dataclass(frozen=True)
class Parity:
    """The graph's features against the float32 PyTorch model's on the same inputs."""

    max_difference: float
    """Largest ``|onnx - torch|`` over every feature component."""
    min_cosine: float
    """Smallest cosine between an image's two features (1.0: same direction)."""


def parity(model: TrainedModel, path: str | Path, inputs: Sequence[Tensor], spec: GraphSpec) -> Parity:
    """The graph at ``path`` run on ``inputs`` (float32 images, cast to its dtype) against the float32
    PyTorch feature of ``inputs``."""
    reference = graph_of(model, replace(spec, dtype="float32"))
    with torch.no_grad():
        expected = reference(*inputs).cpu().double()
    found = torch.from_numpy(onnx_features(path, as_graph_inputs(inputs, spec)).astype(np.float64))
    cosine = torch.nn.functional.cosine_similarity(found, expected, dim=1)
    return Parity(float((found - expected).abs().max()), float(cosine.min()))


def real_inputs(model: TrainedModel, source: str, spec: GraphSpec) -> list[Tensor]:
    """Up to 8 images of ``source`` through the test transform at the graph's size; ids cycle over the
    table's range."""
    transform = replace(model, image_size=spec.size(model)).test_transform()
    paths = collect_images(source)[:MAX_CHECK_IMAGES]
    images = torch.stack([transform(read_image(p)) for p in paths])
    sizes = {"camids": model.data_info.num_cameras, "viewids": model.data_info.num_views}
    ids = [torch.arange(len(paths)) % sizes[name] for name in id_inputs(model, spec.camera_ids)]
    return [t.to(model.task.device) for t in (images, *ids)]


def check(model: TrainedModel, path: Path, spec: GraphSpec, images: str | None) -> dict[str, Parity]:
    """``{"random": parity, "images": parity}`` (the latter with ``images``), printed."""
    names = id_inputs(model, spec.camera_ids)
    random = example_inputs(model, names, CHECK_BATCH, 1, size=spec.size(model))
    found = {"random": parity(model, path, random, spec)}
    if images is not None:
        found["images"] = parity(model, path, real_inputs(model, images, spec), spec)
    for what, value in found.items():
        print(
            f"onnxruntime ({spec.dtype}) vs PyTorch (float32), {what}: max |difference| "
            f"{value.max_difference:.3g}, min cosine {value.min_cosine:.7f}"
        )
    return found


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m reid.tools.export_onnx", description=__doc__.split("\n\n")[0]
    )
    add_run_arguments(parser)
    parser.add_argument("output", help="the .onnx file to write")
    parser.add_argument("--camera", choices=("free", "ids"), default="free", help="SIE models: graph inputs")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="weights, inputs, output")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset ({MIN_OPSET}-{MAX_OPSET})")
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), help="graph input size (default: the run's)"
    )
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch (CPU)")
    parser.add_argument("--check-images", help="images for --check (implies it): folder, glob, list file")
    parser.add_argument(
        "--atol",
        type=float,
        help=f"--check fails above this difference (default {FP32_ATOL}; {FP16_ATOL} for float16)",
    )
    args = parser.parse_args(argv)
    if Path(args.output).suffix != ".onnx":
        raise ValueError(f"output {args.output}: expected a .onnx file name")
    size = None if args.image_size is None else (args.image_size[0], args.image_size[1])
    spec = GraphSpec(args.camera == "ids", size, args.dtype, args.opset)  # checked before the model loads
    model = load_trained_model(args.run, args.checkpoint, args.config, args.num_cameras, "cpu")
    path = export_onnx(model, args.output, spec)
    height, width = spec.size(model)
    inputs = "".join(", " + n for n in id_inputs(model, spec.camera_ids))
    print(f"wrote {path} (inputs: images {args.dtype} [B, 3, {height}, {width}]{inputs}; opset {spec.opset})")
    if (height, width) != model.image_size:
        print(f"note: the run was trained at {model.image_size[0]}x{model.image_size[1]}; its features at "
              f"{height}x{width} are not the ones its evaluation scored")  # fmt: skip
    found = check(model, path, spec, args.check_images) if args.check or args.check_images else {}
    atol = args.atol if args.atol is not None else (FP16_ATOL if args.dtype == "float16" else FP32_ATOL)
    worst = max((value.max_difference for value in found.values()), default=0.0)
    if worst > atol:
        raise SystemExit(f"--check: onnxruntime differs from PyTorch by {worst:.3g} > --atol {atol}")
    return {"path": str(path), **{what: value.max_difference for what, value in found.items()}}


if __name__ == "__main__":
    from reid.tools.cli import run_tool

    run_tool(main, "python -m reid.tools.export_onnx")
