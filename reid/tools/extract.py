"""Embed images with a trained run: features, an index of the images, and what the features are.

    python -m reid.tools.extract outputs/demo/<run> path/to/images feats.npy
    python -m reid.tools.extract outputs/demo/<run>/checkpoints/last.ckpt "crops/**/*.jpg" feats.safetensors
    python -m reid.tools.extract <run> list.txt feats.npy --camids-from-names --device cuda
    python -m reid.tools.extract <run> gallery/ feats.npy --device cuda:1 --precision 16-mixed

The model is the run's (``reid.inference.load_trained_model``: its config and best checkpoint, or the
one given; the training data need not be on disk), supervised or Cluster Contrast (USL / UDA). Images: a
folder (any depth), a glob, one image, or a list file of paths. Writes

* ``feats.npy`` / ``feats.safetensors`` (tensor ``features``): float32 ``[N, D]``, row ``i`` the image
  of index row ``i``; flip-averaged and L2-normalised when the run's ``eval`` says so (as its evaluation
  ranked them: metadata ``normalized``, ``flip``, ``metric``);
* ``feats.csv``: ``row,path,pid,camid,name_format``; ``pid``/``camid`` (0-based) from Market-1501 /
  DukeMTMC / MSMT17 / VeRi-776 file names, empty for other names;
* ``feats.json``: the metadata (model, checkpoint, input size, mean/std, camera mode, skipped files), the
  model's ``fingerprint`` (:meth:`reid.inference.TrainedModel.fingerprint`: the weights' hash and every
  setting that shapes the feature, camera mode included) that ``reid.tools.search`` checks, and ``root``,
  the folder relative inputs were given from (the index holds absolute paths).

SIE models embed in the camera-free mode (the mean SIE embedding) unless ``--camids-from-names`` (then
every file name must carry a camera of the model's range). A file that cannot be decoded is an error
naming it; ``--skip-bad`` leaves it out and lists it in the metadata. ``--precision 16-mixed`` (or
``bf16-mixed``) extracts under autocast (``reid.inference.extraction``; metadata ``precision``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save_file

from reid.inference import Extraction, TrainedModel, add_run_arguments, extract_features, load_trained_model
from reid.inference.device import parse_device
from reid.inference.extraction import AUTOCAST_DTYPES, camera_mode, camids_from_names
from reid.inference.image_files import collect_images
from reid.inference.name_labels import NameLabel, labels_from_names
from reid.search.extracted import output_paths


def _metadata(
    model: TrainedModel, result: Extraction, mode: str, source: str, precision: str
) -> dict[str, Any]:
    return {
        **model.description(),
        "fingerprint": model.fingerprint(mode),
        "precision": precision,
        "source": source,
        "root": os.getcwd(),
        "num_images": len(result.paths),
        "feature_dim": int(result.features.shape[1]),
        "camera_mode": mode,
        "skipped": result.skipped,
    }


def write_outputs(
    out: str | Path, result: Extraction, labels: dict[str, NameLabel | None], meta: dict
) -> None:
    """The features file, the index (``.csv``) and the metadata (``.json``): :func:`output_paths`."""
    features, index, metadata = output_paths(out)
    features.parent.mkdir(parents=True, exist_ok=True)
    if features.suffix == ".npy":
        np.save(features, result.features.numpy())
    else:
        save_file(
            {"features": result.features.contiguous()}, str(features), metadata={"reid": json.dumps(meta)}
        )
    with index.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "path", "pid", "camid", "name_format"])
        for row, path in enumerate(result.paths):
            label = labels[path]
            writer.writerow(
                [row, path, *(("", "", "") if label is None else (label.pid, label.camid, label.dataset))]
            )
    metadata.write_text(json.dumps({**meta, "features": features.name, "index": index.name}, indent=2))


def main(argv: Sequence[str] | None = None) -> Extraction:
    parser = argparse.ArgumentParser(
        prog="python -m reid.tools.extract", description=__doc__.split("\n\n")[0]
    )
    add_run_arguments(parser)
    parser.add_argument(
        "images", help="a folder (any depth), a glob pattern (quoted), an image or a list file"
    )
    parser.add_argument("output", help="features file: .npy or .safetensors (index .csv and .json beside it)")
    parser.add_argument(
        "--camids-from-names", action="store_true", help="SIE with the cameras in the file names"
    )
    parser.add_argument(
        "--skip-bad", action="store_true", help="leave undecodable files out (listed in the .json)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="image decoding processes (0: in this one)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        choices=tuple(AUTOCAST_DTYPES),
        default="32-true",
        help="arithmetic: float32, or fp16 / bf16 autocast (fp16 extraction: 16-mixed)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    parse_device(args.device)  # the inputs are checked before the model is loaded
    output_paths(args.output)
    paths = collect_images(args.images)
    model = load_trained_model(args.run, args.checkpoint, args.config, args.num_cameras, args.device)
    labels = dict(zip(paths, labels_from_names(paths), strict=True))
    camids = camids_from_names(model, paths, [labels[p] for p in paths]) if args.camids_from_names else None
    result = extract_features(
        model,
        paths,
        camids,
        args.batch_size,
        args.workers,
        args.skip_bad,
        progress=not args.no_progress,
        precision=args.precision,
    )
    mode = camera_mode(model, camids is not None)
    meta = _metadata(model, result, mode, str(args.images), args.precision)
    write_outputs(args.output, result, labels, meta)
    skipped = f", {len(result.skipped)} unreadable skipped" if result.skipped else ""
    shape = f"{len(result.paths)} features [{meta['feature_dim']}]"
    print(f"{shape} -> {args.output} ({meta['camera_mode']}, {args.precision}{skipped})")
    return result


if __name__ == "__main__":
    from reid.tools.cli import run_tool

    run_tool(main, "python -m reid.tools.extract")
