"""Exact top-k (``reid.search.exact``) against a brute-force ranking of the full distance matrix.

The reference computes every query x gallery distance at once with ``torch.cdist`` (euclidean) or
normalised dot products (cosine) and orders each row with a stable sort, so equal distances keep gallery
order, the order of the evaluation's ranked list (``reid.evaluation.rank``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid.search import exact_top_k


def brute_force(query: torch.Tensor, gallery: torch.Tensor, metric: str) -> torch.return_types.sort:
    if metric == "euclidean":
        dist = torch.cdist(query.double(), gallery.double())
    else:
        dist = 1 - F.normalize(query.double(), dim=1) @ F.normalize(gallery.double(), dim=1).T
    return torch.sort(dist, dim=1, stable=True)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize(("query_chunk", "gallery_chunk"), [(7, 33), (1000, 100000), (1, 300)])
def test_top_k_is_the_brute_force_ranking(metric: str, query_chunk: int, gallery_chunk: int) -> None:
    """Any chunking (blocks that do not divide the sizes, one query at a time, one block) ranks as the
    full matrix."""
    g = torch.Generator().manual_seed(0)
    query, gallery = torch.randn(23, 12, generator=g), torch.randn(301, 12, generator=g)
    top = exact_top_k(query, gallery, 10, metric, query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    reference = brute_force(query, gallery, metric)
    assert top.indices.dtype == torch.long and top.distances.dtype == torch.float32
    assert torch.equal(top.indices, reference.indices[:, :10])
    torch.testing.assert_close(top.distances.double(), reference.values[:, :10], atol=1e-5, rtol=0)


def test_equal_distances_keep_gallery_order_across_blocks() -> None:
    """Three copies of one gallery row in three different blocks: the query equal to them ranks them
    first, in row order, at distance 0; the rest follow as in the brute-force ranking."""
    g = torch.Generator().manual_seed(1)
    gallery = torch.randn(90, 8, generator=g)
    gallery[40] = gallery[75] = gallery[5]
    query = gallery[5:6].clone()
    top = exact_top_k(query, gallery, 5, "euclidean", gallery_chunk=30)
    assert top.indices[0, :3].tolist() == [5, 40, 75]
    torch.testing.assert_close(top.distances[0, :3], torch.zeros(3), atol=1e-3, rtol=0)
    assert torch.equal(top.indices, brute_force(query, gallery, "euclidean").indices[:, :5])


def test_k_larger_than_the_gallery_returns_the_whole_gallery_ranked() -> None:
    query, gallery = torch.randn(3, 4), torch.randn(6, 4)
    top = exact_top_k(query, gallery, 50, "cosine", gallery_chunk=4)
    assert top.indices.shape == (3, 6)
    assert torch.equal(top.indices, brute_force(query, gallery, "cosine").indices)


def test_a_memory_mapped_gallery_ranks_as_the_tensor(tmp_path: Path) -> None:
    """``np.load(mmap_mode="r")`` rows are read block by block and give the same ranking."""
    g = torch.Generator().manual_seed(2)
    query, gallery = torch.randn(5, 16, generator=g), torch.randn(200, 16, generator=g)
    np.save(tmp_path / "gallery.npy", gallery.numpy())
    mapped = np.load(tmp_path / "gallery.npy", mmap_mode="r")
    from_disk = exact_top_k(query.numpy(), mapped, 8, "euclidean", gallery_chunk=64)
    in_memory = exact_top_k(query, gallery, 8, "euclidean", gallery_chunk=64)
    assert torch.equal(from_disk.indices, in_memory.indices)
    torch.testing.assert_close(from_disk.distances, in_memory.distances)


@pytest.mark.parametrize(
    ("query", "gallery", "k", "metric", "message"),
    [
        (torch.randn(2, 4), torch.randn(5, 3), 1, "cosine", r"query \[Q, D\] and gallery \[N, D\]"),
        (torch.randn(2, 4), torch.randn(0, 4), 1, "cosine", "gallery is empty"),
        (torch.randn(2, 4), torch.randn(5, 4), 0, "cosine", "top-k must be >= 1"),
        (torch.randn(2, 4), torch.randn(5, 4), 1, "cosin", "metric must be one of"),
    ],
)
def test_bad_input_is_refused_with_what_was_expected(query, gallery, k, metric, message) -> None:
    with pytest.raises(ValueError, match=message):
        exact_top_k(query, gallery, k, metric)
