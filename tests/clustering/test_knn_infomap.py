"""Infomap pseudo labels (reid/clustering/knn_infomap.py) against the official Cluster Contrast code.

The reference below is written from alibaba/cluster-contrast-reid ``clustercontrast/utils/infomap_cluster.py``
(read with the library's read_file at commit 69071fe): ``get_dist_nbr`` searches a faiss ``IndexFlatIP``
with ``k`` neighbours (self included) and keeps ``d = 1 - s`` in float32; ``get_links`` walks each row in
rising distance, skips the image itself, adds ``(i, j) -> 1 - d`` while ``d <= 1 - min_sim`` and records
the rows without a link as ``single``; ``cluster_by_infomap`` runs ``Infomap("--two-level --directed")`` on
the links in that order, groups ``iterTree()``'s nodes by ``moduleIndex()`` dropping the tree's inner
nodes (the first two entries of module 0, root and module node; the first of every other), gives every
``single`` row a group of its own, and marks every group of at most ``cluster_num`` (``--k2``) members -1.
The official code calls infomap 1.x (``addLink``, ``iterTree``); the reference uses the same calls of the
pinned 2.x package (``add_link``, ``tree``).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from reid.clustering import KnnInfomap, knn_links, module_labels

faiss = pytest.importorskip("faiss")
infomap = pytest.importorskip("infomap")


def official_links(features: np.ndarray, k: int, min_sim: float):
    """``get_dist_nbr`` + ``get_links``: the links in insertion order and the rows without a link."""
    index = faiss.IndexFlatIP(features.shape[1])
    index.add(features)
    sims, nbrs = index.search(features, k)
    dists = 1 - sims.astype(np.float32)
    order = np.argsort(dists, axis=1)
    dists, nbrs = np.take_along_axis(dists, order, 1), np.take_along_axis(nbrs, order, 1)
    links, single = {}, []
    for i in range(len(features)):
        count = 0
        for j in range(k):
            if nbrs[i, j] == i:
                continue
            if dists[i, j] > 1 - min_sim:
                break
            links[(i, int(nbrs[i, j]))] = float(1 - dists[i, j])
            count += 1
        if count == 0:
            single.append(i)
    return links, single


def official_labels(features: np.ndarray, k: int, min_sim: float, cluster_num: int) -> np.ndarray:
    """``cluster_by_infomap`` on the links of :func:`official_links` (module docstring)."""
    links, single = official_links(features, k, min_sim)
    network = infomap.Infomap("--two-level --directed --silent")
    for (i, j), sim in links.items():
        network.add_link(i, j, sim)
    network.run()
    groups: dict[int, list[int]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 1.x-style tree walk is deprecated in infomap 2.16
        for node in network.tree:
            groups.setdefault(node.moduleIndex(), []).append(node.node_id)
    label = {}
    for module, members in groups.items():
        groups[module] = members[2:] if module == 0 else members[1:]
        for member in groups[module]:
            label[member] = module
    for row in single:
        label[row] = len(groups)
        groups[len(groups)] = [row]
    kept = sorted(m for m, members in groups.items() if len(members) > cluster_num)
    new = {m: n for n, m in enumerate(kept)}
    out = np.full(len(features), -1)
    for row, module in label.items():
        if len(groups[module]) > cluster_num:
            out[row] = new[module]
    return out


def blobs(sizes: list[int], isolated: int, dim: int = 24, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """L2-normalised features: one tight blob per size, plus ``isolated`` lone points; the blob ids
    (-1 for the lone points)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(len(sizes) + isolated, dim, generator=g), dim=1)
    ids = np.concatenate([np.full(size, b) for b, size in enumerate(sizes)] + [np.full(isolated, -1)])
    centre_of = np.concatenate([np.full(size, b) for b, size in enumerate(sizes)])
    centre_of = np.concatenate([centre_of, len(sizes) + np.arange(isolated)])
    spread = torch.where(torch.from_numpy(ids)[:, None] >= 0, 0.15, 0.0)
    features = centres[centre_of] + spread * torch.randn(len(ids), dim, generator=g)
    return F.normalize(features, dim=1), ids


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal outliers, and equal clusters up to their numbering."""
    if not np.array_equal(a < 0, b < 0):
        return False
    pairs = set(zip(a[a >= 0].tolist(), b[b >= 0].tolist()))
    return len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


def test_links_are_the_official_neighbour_links_in_their_order():
    features, _ = blobs([6, 5, 3, 8], isolated=3)
    links = knn_links(features, k1=7, eps=0.5)
    reference, single = official_links(features.numpy(), 7, 0.5)
    assert list(zip(links.source.tolist(), links.target.tolist())) == list(reference)
    assert np.allclose(links.weight, list(reference.values()), atol=1e-6)
    assert np.flatnonzero(~links.has_own_link).tolist() == single


@pytest.mark.parametrize(("seed", "k1", "eps", "k2"), [(0, 15, 0.5, 4), (1, 8, 0.6, 3), (2, 15, 0.3, 4)])
def test_pseudo_labels_are_the_official_infomap_partition(seed, k1, eps, k2):
    g = np.random.default_rng(seed)
    features, _ = blobs(g.integers(2, 14, size=20).tolist(), isolated=6, seed=seed)
    found = KnnInfomap(eps=eps, k1=k1, k2=k2)(features).labels
    expected = official_labels(features.numpy(), k1, eps, k2)
    assert same_partition(found, expected)
    assert found.max() >= 0 and (found < 0).any()  # a case with clusters and outliers


def test_blobs_larger_than_k2_are_the_clusters_and_the_rest_outliers():
    features, ids = blobs([7, 6, 4, 9, 2], isolated=4, seed=3)
    labels = KnnInfomap(eps=0.5, k1=15, k2=4)(features).labels
    small = np.isin(ids, [2, 4, -1])  # the blobs of 4 and 2 images and the lone points
    assert (labels[small] == -1).all() and (labels[~small] >= 0).all()
    assert adjusted_rand_score(ids[~small], labels[~small]) == 1.0
    assert sorted(np.unique(labels[~small]).tolist()) == [0, 1, 2]


def test_module_rule_counts_linkless_members_but_leaves_them_out():
    modules = np.array([1, 1, 1, 1, 1, 2, 2, 3, 3, 3, 3, 3, 0])  # 0: in no link
    has_own_link = np.ones(13, dtype=bool)
    has_own_link[[4, 12]] = False  # image 4 is in module 1 only through others' links
    labels = module_labels(modules, has_own_link, k2=4).labels
    # module 1 has 5 members counted with image 4 (kept, as officially), module 2 only 2
    assert labels.tolist() == [0, 0, 0, 0, -1, -1, -1, 1, 1, 1, 1, 1, -1]
    assert module_labels(modules, has_own_link, k2=5).labels.tolist() == [-1] * 13


def test_camera_centring_applies_before_the_graph():
    features, _ = blobs([6, 6], isolated=0)
    camids = torch.arange(12) % 2
    centred = KnnInfomap(eps=0.5, k1=6, k2=2, camera_centering=True)
    by_hand = F.normalize(features - _camera_means(features, camids), dim=1)
    assert same_partition(centred(features, camids).labels, KnnInfomap(eps=0.5, k1=6, k2=2)(by_hand).labels)
    with pytest.raises(ValueError, match="camera ids"):
        centred(features)


def _camera_means(features: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
    means = torch.stack([features[camids == c].mean(0) for c in range(int(camids.max()) + 1)])
    return means[camids]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 1.2}, "model.clustering.eps=1.2: expected the least cosine similarity"),
        ({"k1": 1}, r"model.clustering.k1=1: expected an integer >= 2"),
        ({"k2": -1}, r"model.clustering.k2=-1: expected an integer >= 0"),
    ],
)
def test_bad_values_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KnnInfomap(**kwargs)


def test_a_missing_infomap_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "infomap", None)
    features, _ = blobs([6], isolated=0)
    with pytest.raises(ImportError, match=r"pip install 'reid\[infomap\]'"):
        KnnInfomap(k1=4)(features)


def test_a_set_smaller_than_k1_searches_all_of_it():
    features, ids = blobs([6, 5], isolated=0)
    labels = KnnInfomap(eps=0.5, k1=15, k2=4)(features).labels  # 11 images < k1
    assert adjusted_rand_score(ids, labels) == 1.0
