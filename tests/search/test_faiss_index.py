"""FAISS indexes of gallery features (``reid.search.faiss_index``) against exact search.

``flat`` and an IVF index scanning all its cells are exhaustive, so they must return the exact ranking;
the approximate settings are held to recall bounds on clustered features (the regime FAISS is built for:
gallery rows near a few hundred identity centres, queries near the same centres).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from reid.search import exact_top_k
from reid.search.faiss_index import (
    FlatSpec,
    HNSWSpec,
    IVFFlatSpec,
    IVFPQSpec,
    build_index,
    description_path,
    import_faiss,
    load_index,
)


def clustered(rows: int, queries: int, dim: int = 32, centres: int = 64, seed: int = 0):
    """Rows and queries near random centres (spread 0.35 around unit-scale centres)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(centres, dim, generator=g)

    def near_centres(count: int) -> torch.Tensor:
        which = torch.randint(0, centres, (count,), generator=g)
        return means[which] + 0.35 * torch.randn(count, dim, generator=g)

    return near_centres(queries), near_centres(rows)


def recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Share of the exact top-k rows that the index found in its top-k."""
    hits = sum(len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True))
    return hits / exact.numel()


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """FAISS's OpenMP threads spin-wait; on a busy 2-core machine that makes k-means 10x slower."""
    faiss = import_faiss()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return clustered(rows=3000, queries=60)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_flat_index_is_exact_search(metric: str, data) -> None:
    query, gallery = data
    index = build_index(gallery, FlatSpec(), metric)
    found, exact = index.search(query, 10), exact_top_k(query, gallery, 10, metric)
    assert torch.equal(found.indices, exact.indices)
    torch.testing.assert_close(found.distances, exact.distances, atol=1e-4, rtol=0)


def test_ivf_scanning_every_cell_is_exact_and_fewer_cells_lose_recall(data) -> None:
    """nprobe = nlist is exhaustive (the exact ranking); nprobe 1 scans one cell of 32 and misses some
    neighbours in the cells next to it, but still finds most (clustered rows)."""
    query, gallery = data
    index = build_index(gallery, IVFFlatSpec(nlist=32, nprobe=32), "euclidean")
    exact = exact_top_k(query, gallery, 10, "euclidean")
    assert torch.equal(index.search(query, 10).indices, exact.indices)
    one_cell = recall(index.tuned(nprobe=1).search(query, 10).indices, exact.indices)
    four_cells = recall(index.tuned(nprobe=4).search(query, 10).indices, exact.indices)
    assert 0.5 < one_cell < 1.0 and four_cells > 0.95 and four_cells >= one_cell


def test_hnsw_recall_on_clustered_features(data) -> None:
    query, gallery = data
    exact = exact_top_k(query, gallery, 10, "cosine")
    found = build_index(gallery, HNSWSpec(m=16, ef_search=64), "cosine").search(query, 10)
    assert recall(found.indices, exact.indices) > 0.95


def test_ivfpq_recall_grows_with_the_code_size(data) -> None:
    """PQ distances are approximate: 32 codes of 5 bits (one per dimension) keep most of the exact top-10,
    8 codes of 4 bits (4 dimensions each) far fewer; every cell is scanned, so the loss is the codes'."""
    query, gallery = data
    exact = exact_top_k(query, gallery, 10, "cosine").indices
    fine = build_index(gallery, IVFPQSpec(nlist=16, m=32, nbits=5, nprobe=16), "cosine")
    coarse = build_index(gallery, IVFPQSpec(nlist=16, m=8, nbits=4, nprobe=16), "cosine")
    fine_recall = recall(fine.search(query, 10).indices, exact)
    coarse_recall = recall(coarse.search(query, 10).indices, exact)
    assert fine_recall > 0.7 and 0.15 < coarse_recall < fine_recall - 0.2


def test_save_and_load_keep_the_index_and_its_description(data, tmp_path: Path) -> None:
    query, gallery = data
    index = build_index(gallery, IVFFlatSpec(nlist=16, nprobe=3), "cosine", features="gallery.npy")
    path = index.save(tmp_path / "gallery.faiss")
    loaded = load_index(path)
    assert (loaded.spec, loaded.metric, loaded.num_rows, loaded.dim, loaded.features) == (
        IVFFlatSpec(nlist=16, nprobe=3),
        "cosine",
        3000,
        32,
        "gallery.npy",
    )
    before, after = index.search(query, 10), loaded.search(query, 10)
    assert torch.equal(before.indices, after.indices)
    torch.testing.assert_close(before.distances, after.distances)
    about = json.loads(description_path(path).read_text())
    assert about["kind"] == "ivf" and about["parameters"] == {"nlist": 16, "nprobe": 3}


def test_load_refuses_a_missing_or_disagreeing_description(data, tmp_path: Path) -> None:
    _, gallery = data
    path = build_index(gallery[:100], FlatSpec(), "euclidean").save(tmp_path / "a.faiss")
    about = description_path(path)
    meta = json.loads(about.read_text())
    about.write_text(json.dumps({**meta, "num_rows": 99}))
    with pytest.raises(ValueError, match="holds 100 rows of dimension 32.*says 99 x 32"):
        load_index(path)
    about.unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.faiss\.json: the description"):
        load_index(path)


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="IVFPQSpec.m=5: must divide the feature dimension 32"):
        build_index(torch.randn(200, 32), IVFPQSpec(nlist=4, m=5), "euclidean")
    with pytest.raises(ValueError, match="nlist=64 cells need at least as many gallery rows, got 10"):
        build_index(torch.randn(10, 32), IVFFlatSpec(nlist=64), "euclidean")
    with pytest.raises(ValueError, match=r"IVFFlatSpec.nprobe: expected a positive integer, got 0"):
        IVFFlatSpec(nprobe=0)
    with pytest.raises(ValueError, match=r"not query-time parameters \(allowed: ef_search\)"):
        build_index(torch.randn(50, 8), HNSWSpec(m=4), "cosine").tuned(nprobe=3)


def test_without_faiss_the_error_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'reid\[faiss\]'"):
        import_faiss()
