import numpy as np
import pytest
import torch
from reference import reference_metrics

from reid.evaluation import EvalConfig, evaluate, evaluate_from_distances, pairwise_distance
from reid.evaluation import rank as rank_module


def _labels(rng: np.random.Generator, num_query: int, num_gallery: int):
    """Identities 0..11 with junk (-1), distractors (0), a single-camera identity (pid 1 only in
    camera 0) and query identities absent from the gallery (pid 20)."""
    q_pids = rng.integers(0, 13, num_query)
    q_pids[:3] = 20  # no gallery image at all
    q_pids[3:6] = 1
    g_pids = rng.integers(-1, 13, num_gallery)
    q_cams = rng.integers(0, 3, num_query)
    g_cams = rng.integers(0, 3, num_gallery)
    q_cams[3:6], g_cams[g_pids == 1] = 0, 0  # pid 1: single camera, so these queries have no match
    return q_pids, g_pids, q_cams, g_cams


def _tensors(*arrays):
    return [torch.as_tensor(a) for a in arrays]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("block_elements", [1 << 23, 37])
def test_metrics_match_reference_loop_with_ties(seed, block_elements, monkeypatch):
    monkeypatch.setattr(rank_module, "RANK_BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(seed)
    q_pids, g_pids, q_cams, g_cams = _labels(rng, 40, 160)
    dist = rng.integers(0, 6, (40, 160)).astype(np.float32)  # few values: many ties
    ref = reference_metrics(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    got = evaluate_from_distances(*_tensors(dist, q_pids, g_pids, q_cams, g_cams), max_rank=20, chunk_size=7)
    assert got.num_queries == 40 and got.num_valid_queries == ref.num_valid < 40 - 5
    assert got.mAP == pytest.approx(ref.mAP, abs=1e-6)
    assert got.mINP == pytest.approx(ref.mINP, abs=1e-6)
    np.testing.assert_allclose(got.cmc.numpy(), ref.cmc, atol=1e-6)


def test_hand_computed_case():
    # valid ranked list of the query (pid 1, cam 0): g3 (d=.1, hit), g0 (d=.2, miss), g4 (d=.2, hit,
    # after g0 by position), g2 (d=.5 miss); g1 is same pid same camera -> removed; g5 is junk.
    dist = torch.tensor([[0.2, 0.0, 0.5, 0.1, 0.2, 0.0]])
    g_pids = torch.tensor([2, 1, 0, 1, 1, -1])
    g_cams = torch.tensor([1, 0, 1, 1, 2, 1])
    got = evaluate_from_distances(dist, torch.tensor([1]), g_pids, torch.tensor([0]), g_cams, max_rank=4)
    assert got.mAP == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert got.mINP == pytest.approx(2 / 3)
    assert got.cmc.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert got.as_dict(ranks=(1,)) == {
        "mAP": pytest.approx(100 * 5 / 6),
        "R1": 100.0,
        "mINP": pytest.approx(200 / 3),
    }


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_features_path_equals_distance_path_and_reference(metric):
    rng = np.random.default_rng(7)
    q_pids, g_pids, q_cams, g_cams = _labels(rng, 30, 120)
    centres = rng.normal(size=(21, 16))
    qf = torch.as_tensor(centres[q_pids] + rng.normal(size=(30, 16)))
    gf = torch.as_tensor(centres[g_pids] + rng.normal(size=(120, 16)))
    labels = _tensors(q_pids, g_pids, q_cams, g_cams)
    config = EvalConfig(metric=metric, normalize=False, chunk_size=8, max_rank=10)
    got = evaluate(qf, gf, *labels, config)
    dist = pairwise_distance(qf, gf, metric)
    ref = reference_metrics(dist.numpy(), q_pids, g_pids, q_cams, g_cams, max_rank=10)
    assert got.mAP == pytest.approx(ref.mAP, abs=1e-6) and got.mINP == pytest.approx(ref.mINP, abs=1e-6)
    np.testing.assert_allclose(got.cmc.numpy(), ref.cmc, atol=1e-6)
    direct = np.sqrt(((qf.numpy()[:, None] - gf.numpy()[None]) ** 2).sum(-1))
    if metric == "cosine":
        qn = qf.numpy() / np.linalg.norm(qf.numpy(), axis=1, keepdims=True)
        gn = gf.numpy() / np.linalg.norm(gf.numpy(), axis=1, keepdims=True)
        direct = 1 - qn @ gn.T
    np.testing.assert_allclose(dist.numpy(), direct, atol=1e-9)


def test_normalized_euclidean_and_cosine_rank_identically():
    rng = np.random.default_rng(3)
    q_pids, g_pids, q_cams, g_cams = _labels(rng, 20, 90)
    qf, gf = torch.randn(20, 8, dtype=torch.float64), torch.randn(90, 8, dtype=torch.float64)
    labels = _tensors(q_pids, g_pids, q_cams, g_cams)
    a = evaluate(qf, gf, *labels, EvalConfig(metric="euclidean", normalize=True))
    b = evaluate(qf, gf, *labels, EvalConfig(metric="cosine", normalize=False))
    assert a.mAP == pytest.approx(b.mAP, abs=1e-12) and torch.allclose(a.cmc, b.cmc)


def test_no_valid_query_raises():
    with pytest.raises(ValueError, match="none of the 2 queries"):
        evaluate_from_distances(
            torch.zeros(2, 3),
            torch.tensor([1, 2]),
            torch.tensor([1, 1, 3]),
            torch.tensor([0, 0]),
            torch.tensor([0, 0, 0]),
        )


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="expected shape"):
        evaluate_from_distances(torch.zeros(2, 3), *_tensors([1, 2], [1, 1], [0, 0], [0, 1]))
