"""A FAISS index over extracted gallery features: exact (``flat``) or approximate (``ivf``, ``ivfpq``,
``hnsw``), saved beside a JSON description and searched in the evaluation's distance units.

FAISS is the optional extra ``reid[faiss]`` (``faiss-cpu``); it is imported only here, when an index is
built or loaded, and its absence is an error that names the extra.

Distances as :func:`reid.search.exact.exact_top_k` reports them: ``euclidean`` indexes use
``METRIC_L2`` (FAISS returns ``||q - g||^2``; the square root is taken), ``cosine`` ones L2-normalise
every row and use ``METRIC_INNER_PRODUCT`` (distance ``1 - q.g``). The kinds are FAISS index-factory
strings (faiss wiki "The index factory"):

* ``flat`` ``Flat``: every row compared, the exact ranking;
* ``ivf`` ``IVF{nlist},Flat``: k-means into ``nlist`` cells; a query scans its ``nprobe`` nearest cells;
* ``ivfpq`` ``IVF{nlist},PQ{m}x{nbits}``: the same with rows product-quantised to ``m`` codes of
  ``nbits`` bits (distances approximate too);
* ``hnsw`` ``HNSW{m}``: a navigable small-world graph of ``m`` links per node, built with
  ``ef_construction`` candidates, searched with ``ef_search``.

The index file (``faiss.write_index``) has a description ``<index>.json`` beside it (kind, parameters,
metric, rows, dimension, the features file it was built from); loading checks the two agree.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch

from reid.evaluation.config import METRICS
from reid.search.exact import Features, TopK, gallery_blocks

EXTRA = "pip install 'reid[faiss]'  (faiss-cpu)"


def import_faiss() -> ModuleType:
    """The ``faiss`` module, or an ImportError naming the extra that installs it."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(f"reid.search.faiss_index needs FAISS, the optional extra: {EXTRA}") from error
    return faiss


def _positive(spec: object, *names: str) -> None:
    for name in names:
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(spec).__name__}.{name}: expected a positive integer, got {value!r}")


@dataclass(frozen=True)
class FlatSpec:
    """Exact search: every gallery row compared."""

    kind: ClassVar[str] = "flat"
    search_fields: ClassVar[tuple[str, ...]] = ()

    def factory(self, dim: int) -> str:
        return "Flat"


@dataclass(frozen=True)
class IVFFlatSpec:
    """Inverted file of ``nlist`` k-means cells holding the full rows; ``nprobe`` cells scanned."""

    nlist: int = 1024
    nprobe: int = 16
    kind: ClassVar[str] = "ivf"
    search_fields: ClassVar[tuple[str, ...]] = ("nprobe",)

    def __post_init__(self) -> None:
        _positive(self, "nlist", "nprobe")

    def factory(self, dim: int) -> str:
        return f"IVF{self.nlist},Flat"


@dataclass(frozen=True)
class IVFPQSpec:
    """Inverted file with product-quantised rows: ``m`` sub-vectors of ``dim / m`` values, each coded in
    ``nbits`` bits."""

    nlist: int = 1024
    m: int = 32
    nbits: int = 8
    nprobe: int = 16
    kind: ClassVar[str] = "ivfpq"
    search_fields: ClassVar[tuple[str, ...]] = ("nprobe",)

    def __post_init__(self) -> None:
        _positive(self, "nlist", "m", "nbits", "nprobe")
        if self.nbits > 16:
            raise ValueError(f"IVFPQSpec.nbits: expected 1..16 bits per code, got {self.nbits}")

    def factory(self, dim: int) -> str:
        if dim % self.m:
            raise ValueError(f"IVFPQSpec.m={self.m}: must divide the feature dimension {dim}")
        return f"IVF{self.nlist},PQ{self.m}x{self.nbits}"


@dataclass(frozen=True)
class HNSWSpec:
    """Hierarchical navigable small-world graph (Malkov and Yashunin, TPAMI 2018) over the full rows."""

    m: int = 32
    ef_construction: int = 40
    ef_search: int = 64
    kind: ClassVar[str] = "hnsw"
    search_fields: ClassVar[tuple[str, ...]] = ("ef_search",)

    def __post_init__(self) -> None:
        _positive(self, "m", "ef_construction", "ef_search")

    def factory(self, dim: int) -> str:
        return f"HNSW{self.m}"


IndexSpec = FlatSpec | IVFFlatSpec | IVFPQSpec | HNSWSpec
SPECS: dict[str, type[IndexSpec]] = {spec.kind: spec for spec in (FlatSpec, IVFFlatSpec, IVFPQSpec, HNSWSpec)}
"""Index kinds by name (the CLI's ``--kind``)."""


def _search_parameters(faiss: ModuleType, index: Any, spec: IndexSpec) -> None:
    """Put the spec's query-time parameters (``nprobe``, ``efSearch``) on the index."""
    space = faiss.ParameterSpace()
    if isinstance(spec, IVFFlatSpec | IVFPQSpec):
        space.set_index_parameter(index, "nprobe", spec.nprobe)
    elif isinstance(spec, HNSWSpec):
        space.set_index_parameter(index, "efSearch", spec.ef_search)


def _prepared(rows: torch.Tensor, metric: str) -> np.ndarray:
    """float32 C-contiguous rows as FAISS takes them; L2-normalised for ``cosine``."""
    out = np.ascontiguousarray(rows.numpy(), dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, 1e-12)
    return out


@dataclass
class GalleryIndex:
    """A FAISS index of ``num_rows`` gallery features (rows in the order of the features file)."""

    index: Any
    spec: IndexSpec
    metric: str
    num_rows: int
    dim: int
    features: str | None = None

    def search(self, query: Features, k: int, block: int = 4096) -> TopK:
        """The ``k`` nearest rows of each query, nearest first (:class:`~reid.search.exact.TopK`).
        Approximate kinds may find fewer than ``k``: those slots are index ``-1``, distance ``inf``."""
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise ValueError(
                f"index search: expected query features [Q, {self.dim}], got {list(query.shape)}"
            )
        if k < 1:
            raise ValueError(f"index search: top-k must be >= 1, got {k}")
        faiss = import_faiss()
        _search_parameters(faiss, self.index, self.spec)
        k = min(k, self.num_rows)
        indices, distances = [], []
        for _, rows in gallery_blocks(query, block):
            scores, found = self.index.search(_prepared(rows, self.metric), k)
            scores = torch.from_numpy(scores)
            d = 1.0 - scores if self.metric == "cosine" else scores.clamp(min=0).sqrt()
            found = torch.from_numpy(found)
            distances.append(d.masked_fill(found < 0, float("inf")))
            indices.append(found)
        return TopK(torch.cat(indices), torch.cat(distances))

    def tuned(self, **search: int) -> GalleryIndex:
        """The same index with other query-time parameters (``nprobe``, ``ef_search``)."""
        wrong = sorted(set(search) - set(self.spec.search_fields))
        if wrong:
            allowed = ", ".join(self.spec.search_fields) or "none"
            raise ValueError(
                f"{self.spec.kind} index: {wrong} are not query-time parameters (allowed: {allowed})"
            )
        spec: Any = self.spec  # each spec kind has its own search fields, checked above
        return dataclasses.replace(self, spec=dataclasses.replace(spec, **search))

    def description(self) -> dict[str, Any]:
        return {
            "kind": self.spec.kind,
            "parameters": dataclasses.asdict(self.spec),
            "metric": self.metric,
            "num_rows": self.num_rows,
            "dim": self.dim,
            "features": self.features,
            "faiss_version": import_faiss().__version__,
        }

    def save(self, path: str | Path) -> Path:
        """Write the index and its description (:func:`description_path`); returns the index path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        import_faiss().write_index(self.index, str(path))
        description_path(path).write_text(json.dumps(self.description(), indent=2))
        return path


def description_path(index_path: str | Path) -> Path:
    """``<index>.json`` beside the index file (``gallery.faiss`` -> ``gallery.faiss.json``)."""
    index_path = Path(index_path)
    return index_path.with_name(index_path.name + ".json")


FAISS_ROWS_PER_CELL = 39
"""faiss's k-means warns below 39 training rows per centroid (``min_points_per_centroid``)."""


def advised_nlist(rows: int) -> int:
    """IVF cells for ``rows`` gallery rows: about ``4 sqrt(rows)`` (faiss's guideline is 4 to 16 sqrt(N)),
    capped so every cell gets :data:`FAISS_ROWS_PER_CELL` training rows; at least 1."""
    return max(1, min(round(4 * math.sqrt(rows)), rows // FAISS_ROWS_PER_CELL))


def nlist_advice(rows: int, nlist: int) -> str | None:
    """A line advising ``--nlist`` when ``nlist`` cells do not suit ``rows`` gallery rows, else None."""
    advised = advised_nlist(rows)
    if nlist * FAISS_ROWS_PER_CELL <= rows and nlist <= 16 * math.sqrt(rows):
        return None
    why = (
        f"{rows / nlist:.1f} rows a cell, faiss's k-means wants at least {FAISS_ROWS_PER_CELL}"
        if nlist * FAISS_ROWS_PER_CELL > rows
        else f"more than 16 sqrt(rows) = {16 * math.sqrt(rows):.0f}"
    )
    exact = " (for so few rows an exact search, --kind flat, costs little)" if rows < 10_000 else ""
    return f"--nlist {nlist} for {rows:,} gallery rows: {why}; use --nlist {advised}{exact}"


def _training_rows(gallery: Features, spec: IndexSpec, sample: int, seed: int) -> np.ndarray | None:
    if not isinstance(spec, IVFFlatSpec | IVFPQSpec):
        return None
    if len(gallery) < spec.nlist:
        raise ValueError(
            f"{spec.kind} index: nlist={spec.nlist} cells need at least as many gallery rows, got "
            f"{len(gallery)}; lower --nlist (about sqrt(rows) to 4 sqrt(rows) is usual)"
        )
    count = min(len(gallery), max(sample, spec.nlist))
    rows = np.sort(np.random.default_rng(seed).choice(len(gallery), count, replace=False))
    return np.asarray(gallery[rows], dtype=np.float32)


def build_index(
    gallery: Features,
    spec: IndexSpec,
    metric: str,
    features: str | Path | None = None,
    train_sample: int = 262144,
    block: int = 65536,
    seed: int = 0,
) -> GalleryIndex:
    """An index of the gallery rows (added ``block`` at a time, so a memory-mapped file is never read
    whole); IVF quantisers are trained on ``train_sample`` random rows (at least ``nlist``)."""
    if metric not in METRICS:
        raise ValueError(f"build index: metric must be one of {METRICS}, got {metric!r}")
    if gallery.ndim != 2 or len(gallery) == 0:
        raise ValueError(
            f"build index: expected gallery features [N, D] with N > 0, got {list(gallery.shape)}"
        )
    faiss = import_faiss()
    dim = int(gallery.shape[1])
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    index = faiss.index_factory(dim, spec.factory(dim), faiss_metric)
    if isinstance(spec, HNSWSpec):
        faiss.downcast_index(index).hnsw.efConstruction = spec.ef_construction
    if isinstance(spec, IVFPQSpec):
        # the factory turns on polysemous training for 8-bit codes: a code reordering for Hamming
        # pre-filtering (polysemous_ht), which this search never uses, and 20x the PQ training time
        faiss.downcast_index(index).do_polysemous_training = False
    train = _training_rows(gallery, spec, train_sample, seed)
    if train is not None:
        index.train(_prepared(torch.from_numpy(train), metric))
    for _, rows in gallery_blocks(gallery, block):
        index.add(_prepared(rows, metric))
    return GalleryIndex(index, spec, metric, len(gallery), dim, None if features is None else str(features))


def load_index(path: str | Path) -> GalleryIndex:
    """An index saved by :meth:`GalleryIndex.save`; a missing or disagreeing description is an error."""
    path = Path(path)
    about = description_path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such index file (build one: python -m reid.tools.search build-index)"
        )
    if not about.is_file():
        raise FileNotFoundError(f"{about}: the description of index {path} is missing; rebuild the index")
    meta = json.loads(about.read_text())
    kind = meta.get("kind")
    if kind not in SPECS:
        raise ValueError(f"{about}: kind {kind!r} is not one of {sorted(SPECS)}")
    spec = SPECS[kind](**meta.get("parameters", {}))
    index = import_faiss().read_index(str(path))
    if index.ntotal != meta["num_rows"] or index.d != meta["dim"]:
        raise ValueError(
            f"{path}: holds {index.ntotal} rows of dimension {index.d}, its description {about} says "
            f"{meta['num_rows']} x {meta['dim']}; the two files are not of one build"
        )
    rows, dim = int(meta["num_rows"]), int(meta["dim"])
    return GalleryIndex(index, spec, meta["metric"], rows, dim, meta.get("features"))
