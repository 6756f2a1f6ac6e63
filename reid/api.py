"""The Python API: a trained model from its run folder, features of images, the protocol's metrics, search.

    from reid.api import embed, evaluate, load_model, search

    model = load_model("outputs/demo/<run>")                    # a run folder or one of its checkpoints
    query = embed(model, "data/synthetic/query")                 # a folder, a glob, a list file or paths
    gallery = embed(model, "data/synthetic/bounding_box_test")
    print(evaluate(model, query, gallery))                       # mAP, R1, R5, R10, mINP (percent)
    for hit in search(model, query, gallery, top_k=5)[:2]:
        print(hit.query, hit.paths, hit.distances)

The same numbers as the command lines (``reid.tools.extract``, ``reid.tools.search``), which are built on
the functions this module gathers: :func:`reid.inference.load_trained_model` (the run's config and
checkpoint, its test transform, flip and normalisation), :func:`reid.inference.extract_features`,
:func:`reid.evaluation.evaluate` under the run's ``eval`` settings and :func:`reid.search.exact.exact_top_k`.
Identities and cameras for :func:`evaluate` come from Market-1501 / DukeMTMC / MSMT17 / VeRi-776 file names
(:func:`reid.inference.name_labels.label_from_name`) unless given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from reid.evaluation import evaluate as evaluate_features
from reid.inference import TrainedModel, extract_features, extraction, load_trained_model
from reid.inference.image_files import collect_images
from reid.inference.name_labels import NameLabel, labels_from_names
from reid.search.exact import exact_top_k

__all__ = ["Embedding", "Hit", "embed", "evaluate", "load_model", "search"]


@dataclass(frozen=True)
class Embedding:
    """Features ``[N, D]`` (float32) of the images ``paths``, with the labels their names carry."""

    features: Tensor
    paths: list[str]
    labels: list[NameLabel | None]


@dataclass(frozen=True)
class Hit:
    """The ``paths`` of the nearest gallery images of one ``query``, nearest first, and their distances."""

    query: str
    paths: list[str]
    distances: list[float]


def load_model(run: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> TrainedModel:
    """The trained model of a run folder (its tested checkpoint, else ``last.ckpt``) or of a checkpoint."""
    return load_trained_model(run, checkpoint, device=device)


def embed(
    model: TrainedModel,
    images: str | Path | Sequence[str],
    batch_size: int = 64,
    camids_from_names: bool = False,
    precision: str = "32-true",
    progress: bool = False,
) -> Embedding:
    """Features of ``images`` (a folder, a glob, an image, a list file, or a sequence of paths) as the run
    evaluates them; an SIE model camera-free unless ``camids_from_names`` (every name must then carry a
    camera the model was built for)."""
    paths = collect_images(str(images)) if isinstance(images, str | Path) else [str(p) for p in images]
    labels = labels_from_names(paths)
    camids = extraction.camids_from_names(model, paths, labels) if camids_from_names else None
    result = extract_features(
        model, paths, camids, batch_size=batch_size, progress=progress, precision=precision
    )
    kept = dict(zip(paths, labels, strict=True))
    return Embedding(result.features, result.paths, [kept[path] for path in result.paths])


def _label_tensors(embedding: Embedding, what: str) -> tuple[Tensor, Tensor]:
    if any(label is None for label in embedding.labels):
        unlabelled = next(p for p, lab in zip(embedding.paths, embedding.labels, strict=True) if lab is None)
        raise ValueError(
            f"evaluate: the {what} image {unlabelled} carries no identity and camera in its name (expected "
            "Market-1501, DukeMTMC, MSMT17 or VeRi-776 file names)"
        )
    return (
        torch.tensor([label.pid for label in embedding.labels if label is not None]),
        torch.tensor([label.camid for label in embedding.labels if label is not None]),
    )


def evaluate(model: TrainedModel, query: Embedding, gallery: Embedding) -> dict[str, float]:
    """mAP, CMC (R1, R5, R10) and mINP in percent under the run's evaluation protocol and settings
    (re-ranking and query expansion included when its ``eval`` has them)."""
    query_pids, query_camids = _label_tensors(query, "query")
    gallery_pids, gallery_camids = _label_tensors(gallery, "gallery")
    result = evaluate_features(
        query.features,
        gallery.features,
        query_pids,
        gallery_pids,
        query_camids,
        gallery_camids,
        model.evaluation,
    )
    return result.as_dict(model.evaluation.ranks)


def search(model: TrainedModel, query: Embedding, gallery: Embedding, top_k: int = 10) -> list[Hit]:
    """The ``top_k`` nearest gallery images of every query under the run's metric (exact search)."""
    top = exact_top_k(query.features, gallery.features, top_k, model.evaluation.metric)
    return [
        Hit(path, [gallery.paths[j] for j in indices], distances)
        for path, indices, distances in zip(
            query.paths, top.indices.tolist(), top.distances.tolist(), strict=True
        )
    ]
