"""Cluster Contrast: Jaccard graph, DBSCAN pseudo labels, the P x K pseudo-label sampler, the USL task.

How we know the official behaviour (damo-cv/TransReID-SSL ``cluster-contrast-reid/``, read with ``fetch``
+ ``git show``): ``clustercontrast/utils/faiss_rerank.py`` ``compute_jaccard_distance`` (transcribed in
:func:`official_jaccard` with an exact neighbour search for faiss' ``index.search(x, k1)``),
``examples/cluster_contrast_train_usl.py`` (``DBSCAN(eps, min_samples=4, metric='precomputed')``,
centroids = mean of each cluster's features, outliers -1 dropped) and ``clustercontrast/utils/data/
sampler.py`` ``RandomMultipleGallerySampler`` (anchor + K-1 of other cameras, else of the other images,
distinct only when there are at least K candidates).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from scipy import sparse
from sklearn.cluster import DBSCAN

from reid.clustering import ClusteringConfig, cluster_centroids, dbscan, jaccard_graph
from reid.data.pseudo_label_sampler import PseudoLabelSampler
from reid.evaluation import EvalConfig
from reid.models.reid_net import ReIDNet
from reid.models.vit import vit_tiny
from reid.run import run
from reid.tasks.cluster_contrast import STATE_KEY
from reid.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY_MARKET

USL_DEMO = [
    "experiment=usl_demo",
    "logger=csv",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "evaluate_before_fit=false",
    *(f"data.dataset.{key}={value}" for key, value in TINY_MARKET.items()),
    "+model.backbone.depth=1",
    "+model.backbone.embed_dim=32",
    "+model.backbone.num_heads=2",
]


def official_jaccard(x: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """``compute_jaccard_distance`` of faiss_rerank.py, dense, numpy (float32 V as the official default)."""
    n = len(x)
    initial_rank = np.argsort(((x[:, None] - x[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :k1]

    def k_reciprocal_neigh(i: int, k: int) -> np.ndarray:
        forward = initial_rank[i, : k + 1]
        backward = initial_rank[forward, : k + 1]
        return forward[np.where(backward == i)[0]]

    nn_k1 = [k_reciprocal_neigh(i, k1) for i in range(n)]
    nn_half = [k_reciprocal_neigh(i, int(np.around(k1 / 2))) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        expansion = nn_k1[i]
        for candidate in nn_k1[i]:
            half = nn_half[candidate]
            if len(np.intersect1d(half, nn_k1[i])) > 2 / 3 * len(half):
                expansion = np.append(expansion, half)
        expansion = np.unique(expansion)
        dist = 2 - 2 * x[i] @ x[expansion].T
        v[i, expansion] = np.exp(-dist) / np.exp(-dist).sum()
    if k2 != 1:
        v = np.stack([v[initial_rank[i, :k2]].mean(0) for i in range(n)])
    jaccard = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        shared = np.minimum(v[i][None], v).sum(1)  # sum over the columns where V_i is non-zero
        jaccard[i] = 1 - shared / (2 - shared)
    return np.maximum(jaccard, 0)


def _clustered_features(n_clusters: int, per_cluster: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 1.5
    points = centres.repeat_interleave(per_cluster, 0) + torch.randn(
        n_clusters * per_cluster, dim, generator=g
    )
    return F.normalize(points, dim=1)


@pytest.mark.parametrize(("k1", "k2"), [(30, 6), (10, 1), (8, 3)])
def test_jaccard_graph_equals_the_dense_official_distance(k1, k2):
    x = _clustered_features(6, 15)
    reference = official_jaccard(x.double().numpy(), k1, k2)
    full = jaccard_graph(x, k1, k2, max_distance=1.0).toarray()
    assert np.abs(full - reference).max() < 1e-5
    graph = jaccard_graph(x, k1, k2, max_distance=0.6)
    stored = (
        sparse.csr_matrix((np.ones_like(graph.data), graph.indices, graph.indptr), graph.shape).toarray() > 0
    )
    assert not stored[reference > 0.6 + 1e-5].any()  # nothing beyond eps is kept
    assert stored[reference < 0.6 - 1e-5].all()  # every pair within eps is
    assert (reference < 0.6).sum() > len(x)  # the test has real neighbours


def _graph(entries: dict[tuple[int, int], float], n: int) -> sparse.csr_matrix:
    rows, cols, vals = [], [], []
    for (i, j), d in entries.items():
        rows += [i, j]
        cols += [j, i]
        vals += [d, d]
    return sparse.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)), shape=(n, n))


def test_dbscan_on_a_hand_made_graph_keeps_explicit_zeros_and_marks_outliers():
    # A = {0, 1, 2}: 0-1 at distance 0 (stored), 1-2 at 0.3, 0-2 not stored (far); B = {3, 4, 5} at 0.1;
    # 6 reaches 5 at 0.5 > eps only. With min_samples 3, 1 is the only core point of A (0, 1, 2 within eps)
    # -- without the explicit zero nobody in A would be.
    entries = {(0, 1): 0.0, (1, 2): 0.3, (3, 4): 0.1, (3, 5): 0.1, (4, 5): 0.1, (5, 6): 0.5}
    graph = _graph(entries, 7)
    found = dbscan(graph, eps=0.4, min_samples=3)
    assert found.labels.tolist() == [0, 0, 0, 1, 1, 1, -1]
    assert (found.num_clusters, found.num_outliers) == (2, 1)
    dense = np.ones((7, 7))
    np.fill_diagonal(dense, 0)
    for (i, j), d in entries.items():
        dense[i, j] = dense[j, i] = d
    official = DBSCAN(eps=0.4, min_samples=3, metric="precomputed").fit_predict(dense)
    assert official.tolist() == found.labels.tolist()


def test_centroids_are_cluster_means_without_outliers():
    features = torch.tensor([[1.0, 0.0], [3.0, 2.0], [9.0, 9.0], [0.0, 4.0]])
    labels = torch.tensor([1, 1, -1, 0])
    assert torch.equal(cluster_centroids(features, labels), torch.tensor([[0.0, 4.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="outlier"):
        cluster_centroids(features, torch.full((4,), -1))
    with pytest.raises(ValueError, match="model.clustering.eps"):
        ClusteringConfig(eps=1.5)


# cluster 0: images 0-4 on cameras 0,0,1,1,2; cluster 1: images 5-8, one camera; cluster 2: image 9 alone;
# images 10, 11: outliers
LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, -1, -1])
CAMS = [0, 0, 1, 1, 2, 0, 0, 0, 0, 1, 0, 2]


def _sampler(batch_size: int = 4, k: int = 4, iterations: int = 5, **kwargs) -> PseudoLabelSampler:
    return PseudoLabelSampler(lambda: LABELS, CAMS, batch_size, k, iterations, seed=3, **kwargs)


def test_sampler_pass_follows_the_official_camera_rule():
    sampler = _sampler()
    rng = np.random.default_rng(0)
    members = [np.flatnonzero(c == LABELS) for c in range(3)]
    for _ in range(50):
        items = sampler._pass(rng, members)
        assert len(items) == 4 + 4 + 1 and not {10, 11} & set(items)
        groups: dict[int, list[int]] = {}
        for i in items:
            groups.setdefault(int(LABELS[i]), []).append(i)
        anchor, *others = groups[0]
        assert len(others) == 3 and all(CAMS[o] != CAMS[anchor] for o in others)
        anchor, *others = groups[1]  # one camera: the other images of the cluster
        assert len(others) == 3 and anchor not in others
        assert groups[2] == [9]  # a single image gives its anchor alone
    wide = PseudoLabelSampler(lambda: np.zeros(6, dtype=np.int64), [0, 1, 1, 1, 1, 1], 3, 3, 1)
    for _ in range(20):  # anchor on camera 1: 1 other-camera image < K -> with replacement
        items = wide._pass(rng, [np.arange(6)])
        if items[0] == 0:  # anchor on camera 0: 5 candidates >= K -> distinct
            assert len(set(items[1:])) == 2


def test_sampler_stream_is_seeded_fixed_length_and_split_over_ranks():
    sampler = _sampler(batch_size=4, iterations=5)
    stream = list(sampler)
    assert len(stream) == len(sampler) == 20 and list(sampler) == stream
    sampler.set_epoch(1)
    assert list(sampler) != stream
    joint = list(_sampler(batch_size=8, iterations=5))
    ranks = [list(_sampler(batch_size=4, iterations=5, num_replicas=2, rank=r)) for r in (0, 1)]
    for b in range(5):
        assert ranks[0][4 * b : 4 * b + 4] + ranks[1][4 * b : 4 * b + 4] == joint[8 * b : 8 * b + 8]
    with pytest.raises(RuntimeError, match="no pseudo labels"):
        list(PseudoLabelSampler(lambda: None, CAMS, 4, 4, 1))


def test_uda_loads_the_source_backbone_but_not_its_neck(compose_config, tmp_path):
    cfg = compose_config("experiment=usl_demo")
    source = ReIDNet(vit_tiny(img_size=(64, 32), patch_size=16, stride=16), num_classes=5)
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}, path)
    cfg.model.weights = str(path)
    dm = instantiate(cfg.data)
    task = instantiate(cfg.model, data_info=dm.info, evaluation=EvalConfig(), _recursive_=False)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(task.net.backbone.state_dict()[key], value), key
    assert torch.equal(task.net.neck.weight, torch.ones(192))  # fresh BNNeck, as the official load_param


def _csv_rows(output_dir: str) -> list[dict[str, str]]:
    with open(Path(output_dir) / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_tiny_usl_run_logs_pseudo_label_counts_and_evaluates(compose_config, tmp_path):
    cfg = compose_config(*USL_DEMO, "test=false")
    summary = run(cfg)
    rows = [r for r in _csv_rows(cfg.paths.output_dir) if r.get("train/num_clusters")]
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # once per epoch
    state = AtomicCheckpointIO().load_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    labels = state[STATE_KEY]["pseudo_labels"]
    assert state[STATE_KEY]["epoch"] == 1 and labels.numel() == 48
    assert (
        float(rows[-1]["train/num_clusters"]) == int(labels.max()) + 1 == state[STATE_KEY]["memory"].shape[0]
    )
    assert float(rows[-1]["train/num_outliers"]) == int((labels < 0).sum())
    val = [r for r in _csv_rows(cfg.paths.output_dir) if r.get("val/mAP")]
    assert len(val) == 2 and 0 < float(val[-1]["val/mAP"]) <= 100
    assert summary["output_dir"] == cfg.paths.output_dir
