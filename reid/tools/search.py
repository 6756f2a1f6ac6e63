"""Rank a gallery for query images with a trained run; build FAISS indexes of extracted features.

    python -m reid.tools.search <run> --query q/ --gallery g/ --top-k 10 --picture ranked.png
    python -m reid.tools.search <run> --query q.jpg --gallery gallery.npy --index gallery.faiss --nprobe 32
    python -m reid.tools.search build-index gallery.npy --out gallery.faiss --kind ivf --nlist 4096

Ranking: the queries (a folder, glob, image or list file) are embedded as ``reid.tools.extract`` does (the
run's transform, flip and normalisation; SIE models camera-free, or with the cameras of the file names
under ``--camids-from-names``). The gallery is a folder (glob, list) embedded the same way, or a features
file of ``reid.tools.extract`` (``.npy``/``.safetensors`` with its ``.csv`` and ``.json``) whose recorded
fingerprint must be this model's in the queries' camera mode: another run's gallery, or one extracted in
the other SIE mode, is refused naming both. The queries are embedded in the gallery file's precision
(``--precision``: float32 or fp16 / bf16 autocast, as extract). Exact search ranks every gallery row by
the distance of the run's ``eval.metric`` (``reid.search.exact``); with ``--index`` a FAISS index built
from that features file ranks instead (``reid.search.faiss_index``, extra ``reid[faiss]``). Printed per
query: the top-k paths, distances and, for file names of the Market-1501 / DukeMTMC / MSMT17 / VeRi-776
formats, identity and camera, with the item's status under the scoring protocol (``match``; ``junk``: same
identity and camera, or a negative identity; ``wrong``); ``--picture`` draws the ranked lists
(``reid.visualization.ranked_list``).

``build-index``: an index of a features file (kinds and parameters: ``reid.search.faiss_index``), saved
with its ``<out>.json`` description.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from reid import api
from reid.evaluation import EvalConfig, RankResult
from reid.evaluation.config import AQEConfig, RerankConfig
from reid.evaluation.distances import top_k_stable
from reid.evaluation.pipeline import evaluate, evaluation_distance_chunks
from reid.inference import TrainedModel, add_run_arguments, load_trained_model
from reid.inference.device import parse_device
from reid.inference.extraction import AUTOCAST_DTYPES, camera_mode
from reid.inference.image_files import collect_images
from reid.inference.name_labels import NameLabel
from reid.search.exact import Features, TopK, exact_top_k
from reid.search.extracted import FEATURE_SUFFIXES, ExtractedFeatures, read_extracted
from reid.visualization.ranked_list import RankedRow, render_ranked_lists
from reid.visualization.ranking import gallery_status

if TYPE_CHECKING:
    from reid.search.faiss_index import GalleryIndex, IndexSpec

BUILD = "build-index"
SPEC_FLAGS = ("nlist", "nprobe", "m", "nbits", "ef_construction", "ef_search")
"""The index parameters ``build-index`` takes (``reid.search.faiss_index`` spec fields)."""


@dataclass
class RankedQuery:
    """One query's top-k: gallery ``paths`` at ``distances`` (nearest first), each ``status``."""

    query: str
    label: NameLabel | None
    paths: list[str]
    distances: list[float]
    status: list[str]


def status_of(query: NameLabel | None, item: NameLabel | None) -> str:
    """``match`` / ``wrong`` / ``junk`` when both names carry identity and camera, else ``unknown``."""
    if query is None or item is None:
        return "unknown"
    return gallery_status(query.pid, query.camid, item.pid, item.camid)


def _describe(label: NameLabel | None) -> str:
    """``id P cam C`` with the camera numbered as in the file name (``c6`` is cam 6; labels are 0-based)."""
    return "" if label is None else f"id {label.pid} cam {label.camid + 1}"


def embed(
    model: TrainedModel,
    paths: Sequence[str],
    batch_size: int,
    progress: bool,
    with_cameras: bool = False,
    precision: str = "32-true",
) -> ExtractedFeatures:
    """:func:`reid.api.embed` of ``paths`` (SIE fed the cameras of the names when ``with_cameras``, else
    camera-free; in ``precision``) with the metadata a gallery file of ``reid.tools.extract`` carries."""
    found = api.embed(model, paths, batch_size, with_cameras, precision, progress)
    mode = camera_mode(model, with_cameras)
    meta = model.description() | {
        "camera_mode": mode,
        "fingerprint": model.fingerprint(mode),
        "precision": precision,
    }
    return ExtractedFeatures(found.features, found.paths, found.labels, meta)


def check_gallery_file(
    model: TrainedModel, source: str, gallery: ExtractedFeatures, with_cameras: bool
) -> None:
    """The features file ``source`` must be this model's, in the camera mode the queries are embedded in:
    else the distances between them mean nothing. The error names both sides and what to do."""
    description = model.description()
    for key in ("normalized", "metric"):
        if gallery.metadata.get(key) != description[key]:
            raise ValueError(
                f"--gallery {source}: features with {key}={gallery.metadata.get(key)!r}, the run ranks with "
                f"{key}={description[key]!r}; extract the gallery with this run (reid.tools.extract)"
            )
    ours = camera_mode(model, with_cameras and model.uses_cameras)
    theirs = gallery.metadata.get("camera_mode", "")
    if model.uses_cameras and theirs != ours:
        flag = "without --camids-from-names" if with_cameras else "with --camids-from-names"
        raise ValueError(
            f"--gallery {source}: extracted in SIE mode {theirs!r}, the queries are embedded in {ours!r}; "
            f"run search {flag} (it feeds the queries' cameras from their names), or re-extract the gallery"
        )
    fingerprint = gallery.metadata.get("fingerprint")
    if fingerprint is None:
        raise ValueError(
            f"--gallery {source}: its metadata records no model fingerprint (extracted by an older version); "
            "re-extract it with python -m reid.tools.extract <run> <images> <features>"
        )
    if fingerprint != model.fingerprint(ours):
        what = model.feature_definition(ours)
        differs = [
            f"{key} {gallery.metadata.get(key)!r} vs {what[key]!r}"
            for key in ("weights_sha256", "model", "image_size", "normalized", "flip", "interpolation")
            if key in gallery.metadata and gallery.metadata.get(key) != what[key]
        ]
        raise ValueError(
            f"--gallery {source}: made by another model (fingerprint {fingerprint}, extracted with "
            f"{gallery.metadata.get('checkpoint')}) than {model.files.checkpoint} (fingerprint "
            f"{model.fingerprint(ours)}){': ' + '; '.join(differs) if differs else ''}; distances across "
            "models mean nothing: extract the gallery with this run, or search with the run that made it"
        )


def load_gallery(
    model: TrainedModel, source: str, batch_size: int, progress: bool, with_cameras: bool = False
) -> ExtractedFeatures:
    """A features file of ``reid.tools.extract`` of this model (:func:`check_gallery_file`), or images
    embedded now as the queries are."""
    if Path(source).suffix not in FEATURE_SUFFIXES:
        return embed(model, collect_images(source), batch_size, progress, with_cameras)
    gallery = read_extracted(source)
    check_gallery_file(model, source, gallery, with_cameras)
    return gallery


def evaluation_config(model: TrainedModel, rerank: bool, aqe: bool) -> EvalConfig:
    """The run's ``eval`` with its k-reciprocal re-ranking / average query expansion on when asked (the
    run's settings when it has them, else the defaults: k1 20, k2 6, lambda 0.3; k 5, alpha 3)."""
    run = model.evaluation
    return dataclasses.replace(
        run,
        rerank=(run.rerank or RerankConfig()) if rerank else None,
        aqe=(run.aqe or AQEConfig()) if aqe else None,
    )


def _as_tensor(features: Features) -> Tensor:
    """All rows as a float32 tensor (a copy of a features file: its memmap is read-only)."""
    return features.float() if torch.is_tensor(features) else torch.from_numpy(np.array(features, np.float32))


def evaluated_top_k(query: ExtractedFeatures, gallery: ExtractedFeatures, k: int, config: EvalConfig) -> TopK:
    """The top ``k`` under the evaluation pipeline (``config``: re-ranking / query expansion), stable."""
    indices, distances = [], []
    for _, dist in evaluation_distance_chunks(
        _as_tensor(query.features), _as_tensor(gallery.features), config
    ):
        rows, values = top_k_stable(dist, k)
        indices.append(rows)
        distances.append(values.float())
    return TopK(torch.cat(indices), torch.cat(distances))


def search_metrics(
    query: ExtractedFeatures, gallery: ExtractedFeatures, config: EvalConfig
) -> RankResult | None:
    """mAP / CMC / mINP of the search under the evaluation protocol when every query and gallery name
    carries identity and camera (Market-1501, DukeMTMC, MSMT17, VeRi-776 formats), else None."""
    if any(label is None for label in (*query.labels, *gallery.labels)):
        return None
    q_pids, q_cams = (torch.tensor([getattr(lab, key) for lab in query.labels]) for key in ("pid", "camid"))
    g_pids, g_cams = (torch.tensor([getattr(lab, key) for lab in gallery.labels]) for key in ("pid", "camid"))
    q, g = _as_tensor(query.features), _as_tensor(gallery.features)
    return evaluate(q, g, q_pids, g_pids, q_cams, g_cams, config)


def rank(
    query: ExtractedFeatures,
    gallery: ExtractedFeatures,
    args: argparse.Namespace,
    config: EvalConfig | None = None,
) -> TopK:
    if query.features.shape[1] != gallery.features.shape[1]:
        raise ValueError(
            f"--gallery {args.gallery}: features of dimension {gallery.features.shape[1]}, the run's are "
            f"{query.features.shape[1]}; extract the gallery with this run"
        )
    if config is not None and (config.rerank is not None or config.aqe is not None):
        return evaluated_top_k(query, gallery, args.top_k, config)
    if args.index is None:
        return exact_top_k(query.features, gallery.features, args.top_k, query.metric)
    from reid.search.faiss_index import load_index

    index = load_index(args.index)
    if index.num_rows != len(gallery.paths) or index.metric != gallery.metric:
        raise ValueError(
            f"--index {args.index}: {index.num_rows} rows ranked by {index.metric}, the gallery "
            f"{args.gallery} has {len(gallery.paths)} ranked by {gallery.metric}; build the index from "
            "that features file"
        )
    search = {"nprobe": args.nprobe, "ef_search": args.ef_search}
    return index.tuned(**{k: v for k, v in search.items() if v is not None}).search(
        query.features, args.top_k
    )


def ranked_queries(query: ExtractedFeatures, gallery: ExtractedFeatures, top: TopK) -> list[RankedQuery]:
    results = []
    for q, (rows, distances) in enumerate(zip(top.indices.tolist(), top.distances.tolist(), strict=True)):
        found = [(row, d) for row, d in zip(rows, distances, strict=True) if row >= 0]
        label = query.labels[q]
        results.append(
            RankedQuery(
                query=query.paths[q],
                label=label,
                paths=[gallery.paths[row] for row, _ in found],
                distances=[d for _, d in found],
                status=[status_of(label, gallery.labels[row]) for row, _ in found],
            )
        )
    return results


def print_ranked(results: Sequence[RankedQuery], gallery: ExtractedFeatures) -> None:
    labels = dict(zip(gallery.paths, gallery.labels, strict=True))
    for number, result in enumerate(results, start=1):
        print(f"query {number}/{len(results)}: {result.query}  {_describe(result.label)}".rstrip())
        for rank_, (path, distance, status) in enumerate(
            zip(result.paths, result.distances, result.status, strict=True), start=1
        ):
            print(f"  {rank_:>3}  {distance:.4f}  {path}  {_describe(labels[path])}  {status}")


def write_picture(results: Sequence[RankedQuery], path: Path, rows: int, cell: tuple[int, int]) -> None:
    shown = [
        RankedRow(
            Path(r.query),
            [Path(p) for p in r.paths],
            r.distances,
            r.status,
            f"{Path(r.query).name}  {_describe(r.label)}".rstrip(),
        )
        for r in results[:rows]
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    render_ranked_lists(shown, cell=cell).save(path)
    more = f" (the first {rows} of {len(results)} queries)" if len(results) > rows else ""
    print(f"ranked lists -> {path}{more}")


def _rank_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reid.tools.search",
        description=__doc__.split("\n\n")[0],
        epilog=f"index of a features file ({BUILD} -h for its options):\n{_build_parser().format_usage()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser, moved_checkpoints=False)
    parser.add_argument("--query", required=True, help="query images: folder, glob (quoted), image or list")
    parser.add_argument(
        "--gallery", required=True, help="gallery images (folder, glob, list) or a features file of extract"
    )
    parser.add_argument(
        "--camids-from-names",
        action="store_true",
        help="SIE models: feed the cameras of the file names (queries, and a gallery of images); a gallery "
        "features file must have been extracted the same way",
    )
    parser.add_argument("--index", type=Path, help="FAISS index built from the --gallery features file")
    parser.add_argument(
        "--rerank",
        action="store_true",
        help="k-reciprocal re-ranking (the run's eval.rerank, else k1 20 k2 6)",
    )
    parser.add_argument(
        "--aqe", action="store_true", help="average query expansion (the run's eval.aqe, else k 5)"
    )
    parser.add_argument("--nprobe", type=int, help="IVF cells scanned per query (default: the index's)")
    parser.add_argument("--ef-search", type=int, help="HNSW search candidates (default: the index's)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--picture", type=Path, help="write the ranked lists to this image (.png, .jpg)")
    parser.add_argument("--picture-rows", type=int, default=20, help="queries drawn in the picture")
    parser.add_argument("--cell", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        choices=tuple(AUTOCAST_DTYPES),
        help="arithmetic of the embeddings (default: a gallery features file's, else 32-true)",
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


def rank_main(argv: Sequence[str]) -> list[RankedQuery]:
    args = _rank_parser().parse_args(argv)
    if args.index is not None and Path(args.gallery).suffix not in FEATURE_SUFFIXES:
        raise ValueError(
            f"--index needs --gallery to be the features file it was built from, got {args.gallery}"
        )
    if args.top_k < 1:
        raise ValueError(f"--top-k: expected an integer >= 1, got {args.top_k}")
    if args.index is not None and (args.rerank or args.aqe):
        raise ValueError("--rerank / --aqe rank the whole gallery exactly; leave out --index")
    parse_device(args.device)  # the inputs are checked before the model is loaded
    queries = collect_images(args.query)
    extracted = read_extracted(args.gallery) if Path(args.gallery).suffix in FEATURE_SUFFIXES else None
    gallery_images = collect_images(args.gallery) if extracted is None else []
    model = load_trained_model(args.run, args.checkpoint, device=args.device)
    progress = not args.no_progress
    cameras = args.camids_from_names
    if extracted is not None:
        check_gallery_file(model, args.gallery, extracted, cameras)
    recorded = extracted.metadata.get("precision") if extracted is not None else None
    precision = args.precision or recorded or "32-true"
    gallery = (
        extracted
        if extracted is not None
        else embed(model, gallery_images, args.batch_size, progress, cameras, precision)
    )
    query = embed(model, queries, args.batch_size, progress, cameras, precision)
    config = evaluation_config(model, args.rerank, args.aqe)
    results = ranked_queries(query, gallery, rank(query, gallery, args, config))
    print_ranked(results, gallery)
    metrics = search_metrics(query, gallery, config)
    if metrics is not None:
        steps = " + ".join(n for n, on in (("query expansion", args.aqe), ("re-ranking", args.rerank)) if on)
        values = metrics.as_dict(config.ranks)
        line = ", ".join(f"{name} {value:.2f}" for name, value in values.items())
        print(f"metrics ({steps or 'plain distances'}; {metrics.num_valid_queries} of {metrics.num_queries} "
              f"queries have a match in another camera): {line}")  # fmt: skip
    if args.picture is not None:
        write_picture(results, args.picture, args.picture_rows, tuple(args.cell))
    return results


def _build_parser() -> argparse.ArgumentParser:
    from reid.search.faiss_index import SPECS

    parser = argparse.ArgumentParser(
        prog=f"python -m reid.tools.search {BUILD}",
        description="A FAISS index of a features file of reid.tools.extract (reid.search.faiss_index).",
    )
    parser.add_argument("features", help="features file (.npy or .safetensors, with its .csv and .json)")
    parser.add_argument("--out", type=Path, required=True, help="index file, e.g. gallery.faiss")
    parser.add_argument("--kind", choices=sorted(SPECS), default="ivf")
    parser.add_argument("--nlist", type=int, help="ivf, ivfpq: k-means cells (default 1024)")
    parser.add_argument("--nprobe", type=int, help="ivf, ivfpq: cells scanned per query (default 16)")
    parser.add_argument("--m", type=int, help="ivfpq: sub-quantisers (default 32); hnsw: links per node (32)")
    parser.add_argument("--nbits", type=int, help="ivfpq: bits per code (default 8)")
    parser.add_argument("--ef-construction", type=int, help="hnsw: build candidates (default 40)")
    parser.add_argument("--ef-search", type=int, help="hnsw: search candidates (default 64)")
    parser.add_argument("--train-sample", type=int, default=262144, help="ivf, ivfpq: k-means training rows")
    return parser


def index_spec(kind: str, given: dict[str, int | None]) -> IndexSpec:
    """The spec of ``kind`` with the parameters given (``None``: the default); a parameter of another
    kind is an error naming its flag."""
    from reid.search.faiss_index import SPECS

    spec_class = SPECS[kind]
    names = [f.name for f in dataclasses.fields(spec_class)]
    chosen = {key: value for key, value in given.items() if value is not None}
    wrong = [key for key in chosen if key not in names]
    if wrong:
        flags = ", ".join("--" + key.replace("_", "-") for key in wrong)
        takes = ", ".join("--" + key.replace("_", "-") for key in names) or "no parameters"
        raise ValueError(f"--kind {kind}: {flags} is not one of its parameters ({takes})")
    return spec_class(**chosen)


def build_main(argv: Sequence[str]) -> GalleryIndex:
    from reid.search.faiss_index import build_index, nlist_advice

    args = _build_parser().parse_args(argv)
    spec = index_spec(args.kind, {key: getattr(args, key) for key in SPEC_FLAGS})
    gallery = read_extracted(args.features)
    if hasattr(spec, "nlist") and (advice := nlist_advice(len(gallery.paths), spec.nlist)) is not None:
        print(f"note: {advice}")
    features = Path(args.features).resolve()
    index = build_index(gallery.features, spec, gallery.metric, features, args.train_sample)
    index.save(args.out)
    print(f"{args.kind} index of {index.num_rows} x {index.dim} ({index.metric}) -> {args.out}")
    return index


def main(argv: Sequence[str] | None = None) -> list[RankedQuery] | GalleryIndex:
    """``build-index ...`` builds an index; anything else ranks (``-h`` on either for its options)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == BUILD:
        return build_main(argv[1:])
    return rank_main(argv)


if __name__ == "__main__":
    from reid.tools.cli import run_tool

    run_tool(main, "python -m reid.tools.search")
