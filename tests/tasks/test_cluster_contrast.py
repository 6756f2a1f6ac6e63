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
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from scipy import sparse
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from reid.clustering import (
    JaccardDBSCAN,
    center_per_camera,
    cluster_centroids,
    dbscan,
    jaccard_graph,
)
from reid.data.pseudo_label_sampler import PseudoLabelSampler
from reid.evaluation import EvalConfig
from reid.models.cnn_reid_net import CNNReIDNet
from reid.models.pooling import GeneralizedMeanPool, GlobalAvgPool
from reid.models.reid_net import ReIDNet
from reid.models.resnet import resnet_tiny, resnet_tiny_ibn_a
from reid.models.snr import snr_resnet
from reid.models.vit import vit_tiny
from reid.run import run
from reid.tasks.cluster_contrast import STATE_KEY, ClusterContrastNet
from reid.tasks.from_config import build_task
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
        JaccardDBSCAN(eps=1.5)


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
    joint = list(_sampler(batch_size=8, iterations=5))  # the global batch: each of 2 ranks takes 4 of 8
    ranks = [list(_sampler(batch_size=8, iterations=5, num_replicas=2, rank=r)) for r in (0, 1)]
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
    task = build_task(cfg.model, dm.info, EvalConfig())
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


def test_tiny_usl_run_trains_on_infomap_pseudo_labels(compose_config):
    """``model/clustering=knn_infomap`` swaps the clustering and nothing else: the run trains on its
    labels (the memory has one row per Infomap cluster) and evaluates."""
    cfg = compose_config(*USL_DEMO, "test=false", "trainer.max_epochs=1", "model/clustering=knn_infomap")
    assert cfg.model.clustering._target_ == "reid.clustering.KnnInfomap"
    run(cfg)
    state = AtomicCheckpointIO().load_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    labels = state[STATE_KEY]["pseudo_labels"]
    rows = [r for r in _csv_rows(cfg.paths.output_dir) if r.get("train/num_clusters")]
    assert (
        float(rows[-1]["train/num_clusters"]) == int(labels.max()) + 1 == state[STATE_KEY]["memory"].shape[0]
    )
    assert int(labels.max()) >= 1 and any(r.get("train/loss") for r in _csv_rows(cfg.paths.output_dir))


def test_tiny_usl_run_clusters_the_union_of_extra_train_datasets(compose_config):
    """``data.extra_train_datasets`` (reid/data/combined.py) with Cluster Contrast: the unlabelled union
    of both sources is clustered (48 + 48 images), each source's cameras apart for the centring."""
    cfg = compose_config(
        *USL_DEMO,
        "test=false",
        "trainer.max_epochs=1",
        "data.extra_train_datasets=[synthetic_duke_tiny]",
        "model.clustering.camera_centering=true",
    )
    run(cfg)
    state = AtomicCheckpointIO().load_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert state[STATE_KEY]["pseudo_labels"].numel() == 96


# ---- per-camera centring ---------------------------------------------------------------------------
def _people_under_camera_casts(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """6 people, each seen 4 times by each of 3 cameras; a camera adds a cast 4x larger than the spread
    between people, as an unadapted model's features of a new domain do."""
    g = torch.Generator().manual_seed(seed)
    people, casts = torch.randn(6, 16, generator=g), 4 * torch.randn(3, 16, generator=g)
    pids = torch.arange(6).repeat_interleave(12)
    camids = torch.arange(3).repeat_interleave(4).repeat(6)
    features = people[pids] + casts[camids] + 0.05 * torch.randn(72, 16, generator=g)
    return F.normalize(features, dim=1), pids, camids


def test_camera_centring_subtracts_each_cameras_mean_then_normalises():
    features = torch.tensor([[1.0, 2.0], [3.0, 2.0], [0.0, 5.0], [0.0, 1.0], [4.0, 4.0]])
    camids = torch.tensor([7, 7, 2, 2, 9])  # any ids; camera 9 has one image: its feature is 0
    centred = center_per_camera(features, camids)
    expected = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]])
    assert torch.allclose(centred, expected)
    with pytest.raises(ValueError, match="one camera id per feature"):
        center_per_camera(features, camids[:3])


def test_camera_centring_turns_camera_clusters_into_identity_clusters():
    features, pids, camids = _people_under_camera_casts()
    config = JaccardDBSCAN(eps=0.5, min_samples=4, k1=12, k2=3)
    plain = config(features).labels
    centred = dataclasses.replace(config, camera_centering=True)(features, camids).labels
    # without centring no cluster spans two cameras, so no person is matched across cameras; with it,
    # one cluster per person
    assert all(len(set(camids[torch.from_numpy(plain == c)].tolist())) == 1 for c in set(plain.tolist()))
    assert adjusted_rand_score(pids.numpy(), plain) < 0.5
    assert adjusted_rand_score(pids.numpy(), centred) == 1.0
    with pytest.raises(ValueError, match="camera ids"):
        dataclasses.replace(config, camera_centering=True)(features)


def test_the_task_clusters_with_the_training_images_cameras(compose_config, monkeypatch):
    seen = []

    clustering = JaccardDBSCAN.__call__

    def recording(self, features, camids=None):
        seen.append((self.camera_centering, camids))
        return clustering(self, features, camids)

    monkeypatch.setattr(JaccardDBSCAN, "__call__", recording)
    cfg = compose_config(
        *USL_DEMO, "test=false", "trainer.max_epochs=1", "model.clustering.camera_centering=true"
    )
    run(cfg)
    dm = instantiate(cfg.data)
    assert len(seen) == 1 and seen[0][0] is True
    assert seen[0][1].tolist() == [r.camid for r in dm.train_records]


# ---- CNN backbones ----------------------------------------------------------------------------------
def test_cnn_net_is_the_official_normalized_bn_of_the_pooled_map():
    backbone = resnet_tiny()
    net = ClusterContrastNet(backbone, pool=GeneralizedMeanPool(p=3.0)).eval()
    with torch.no_grad():
        net.neck.running_mean.normal_()
        net.neck.running_var.uniform_(0.5, 2.0)
        net.neck.weight.uniform_(0.5, 1.5)
    images = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        feature_map = backbone.forward_features(images)
        pooled = feature_map.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
        bn = (
            (pooled - net.neck.running_mean)
            / torch.sqrt(net.neck.running_var + net.neck.eps)
            * net.neck.weight
        )
        assert torch.allclose(net(images), F.normalize(bn, dim=1), atol=1e-6)
    assert net.embedding_dim == backbone.num_features and not net.neck.bias.requires_grad
    assert "pool.p" in net.state_dict()
    assert isinstance(ClusterContrastNet(resnet_tiny()).pool, GlobalAvgPool)  # default: average pooling
    with pytest.raises(ValueError, match="part tokens"):
        ClusterContrastNet(resnet_tiny(), feature="cls_parts_cat")
    with pytest.raises(ValueError, match="model.pool"):
        ClusterContrastNet(vit_tiny(img_size=(64, 32)), pool=GlobalAvgPool())
    with pytest.raises(TypeError, match="embed_dim .a ViT. or num_features"):
        ClusterContrastNet(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("experiment", "make_backbone"),
    [
        ("uda_demo_a2b", resnet_tiny),
        ("uda_ibn_demo_a2b", resnet_tiny_ibn_a),
        ("uda_snr_demo_a2b", lambda: snr_resnet(resnet=resnet_tiny)),
    ],
    ids=["bot", "ibn", "snr"],
)
def test_uda_loads_a_cnn_sources_backbone_but_not_its_head(
    experiment, make_backbone, compose_config, tmp_path
):
    source = CNNReIDNet(make_backbone(), num_classes=5)
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}, path)
    cfg = compose_config(f"experiment={experiment}", f"model.weights={path}", "data.test_datasets=null")
    task = build_task(cfg.model, instantiate(cfg.data).info, EvalConfig())
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(task.net.backbone.state_dict()[key], value), key
    assert torch.equal(task.net.neck.running_mean, torch.zeros(128))  # a fresh BNNeck
    assert isinstance(task.net.pool, GlobalAvgPool)  # the sources' pooling
