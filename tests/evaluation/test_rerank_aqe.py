import numpy as np
import pytest
import torch
from reference import reference_aqe, reference_metrics, reference_rerank

from reid.evaluation import AQEConfig, EvalConfig, RerankConfig, average_query_expansion, evaluate
from reid.evaluation import rerank as rerank_module
from reid.evaluation.rerank import rerank_distance_chunks


def _clustered(seed: int, num_query: int, num_gallery: int, dim: int = 12):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim))
    q_pids, g_pids = rng.integers(0, 10, num_query), rng.integers(0, 10, num_gallery)
    qf = centres[q_pids] + 0.8 * rng.normal(size=(num_query, dim))
    gf = centres[g_pids] + 0.8 * rng.normal(size=(num_gallery, dim))
    return torch.as_tensor(qf), torch.as_tensor(gf), q_pids, g_pids


@pytest.mark.parametrize(
    ("k1", "k2", "lam"), [(20, 6, 0.3), (50, 15, 0.3), (7, 3, 0.0), (5, 1, 1.0), (15, 4, 0.3)]
)
def test_sparse_rerank_equals_dense_zhong(k1, k2, lam, monkeypatch):
    monkeypatch.setattr(rerank_module, "NEIGHBOUR_BLOCK_ELEMENTS", 1000)  # several neighbour blocks
    qf, gf, _, _ = _clustered(k1, 23, 71)
    config = RerankConfig(k1=k1, k2=k2, lambda_value=lam)
    blocks = list(rerank_distance_chunks(qf, gf, config, "euclidean", chunk_size=6))
    assert [start for start, _ in blocks] == [0, 6, 12, 18]
    got = torch.cat([block for _, block in blocks]).numpy()
    want = reference_rerank(qf.numpy(), gf.numpy(), k1, k2, lam)
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_pair_ranges_and_owners_split_entries_within_budget():
    # entry e owns counts[e] pairs; pieces of 4 pairs cut entries 2 and 5 in two
    counts = torch.tensor([3, 0, 5, 1, 0, 2, 4])
    ends = torch.cumsum(counts, 0)
    ranges = rerank_module.pair_ranges(int(ends[-1]), 4)
    assert ranges == [(0, 4), (4, 8), (8, 12), (12, 15)]
    pieces = [rerank_module.pairs_of_range(counts, ends, a, b).tolist() for a, b in ranges]
    assert pieces == [[0, 0, 0, 2], [2, 2, 2, 2], [3, 5, 5, 6], [6, 6, 6]]
    every = torch.arange(7).repeat_interleave(counts).tolist()
    for budget in range(1, 17):
        ranges = rerank_module.pair_ranges(int(ends[-1]), budget)
        pieces = [rerank_module.pairs_of_range(counts, ends, a, b).tolist() for a, b in ranges]
        assert max(map(len, pieces)) <= budget and [e for p in pieces for e in p] == every
    assert rerank_module.pair_ranges(0, 4) == []
    with pytest.raises(ValueError, match="pair budget"):
        rerank_module.pair_ranges(10, 0)


def test_row_blocks_hold_at_most_budget_items():
    per_row = torch.tensor([4, 1, 2, 9, 0, 3, 3, 1])
    assert rerank_module.row_blocks(per_row, 5) == [(0, 2), (2, 3), (3, 4), (4, 6), (6, 8)]
    assert rerank_module.row_blocks(per_row, 100) == [(0, 8)]
    assert rerank_module.row_blocks(per_row, 1) == [(i, i + 1) for i in range(8)]
    with pytest.raises(ValueError, match="expansion budget"):
        rerank_module.row_blocks(per_row, 0)


@pytest.mark.parametrize(("k1", "k2"), [(20, 6), (50, 15)])
def test_jaccard_pairs_per_piece_never_exceed_budget(k1, k2, monkeypatch):
    """Both presets: with budgets far below one query row's Jaccard pairs and a few rows' expansion
    entries, every piece stays within its budget, every pair is still formed exactly once, and d* is
    unchanged."""
    qf, gf, _, _ = _clustered(k1 + 1, 17, 90)
    config = RerankConfig(k1=k1, k2=k2)
    sizes, expansion = [], []
    original, original_blocks = rerank_module.pairs_of_range, rerank_module.row_blocks

    def recording(counts, ends, a, b):
        owner = original(counts, ends, a, b)
        sizes.append(owner.numel())
        return owner

    def recording_blocks(per_row, budget):
        blocks = original_blocks(per_row, budget)
        expansion.append((budget, [int(per_row[a:b].sum()) for a, b in blocks]))
        return blocks

    monkeypatch.setattr(rerank_module, "pairs_of_range", recording)
    monkeypatch.setattr(rerank_module, "row_blocks", recording_blocks)
    unbounded = torch.cat([b for _, b in rerank_distance_chunks(qf, gf, config, "euclidean", 8)])
    per_block = list(sizes)
    assert len(per_block) == 3, per_block  # one piece per query block when the budget is not reached
    sizes.clear()
    budget = 500  # below the pairs of the last block, which is a single query row
    monkeypatch.setattr(rerank_module, "EXPANSION_BLOCK_ENTRIES", 4 * k1 * k2)
    got = torch.cat([b for _, b in rerank_distance_chunks(qf, gf, config, "euclidean", 8, budget)])
    assert per_block[-1] > budget and max(sizes) <= budget
    assert len(sizes) == sum(-(-p // budget) for p in per_block)
    assert sum(sizes) == sum(per_block)
    (_, whole), (small, blocks) = expansion
    assert len(whole) == 1 and len(blocks) > 10 and max(blocks) <= small and sum(blocks) == whole[0]
    torch.testing.assert_close(got, unbounded, atol=1e-12, rtol=0)  # == dense reference, test above


def test_cosine_rerank_equals_euclidean_on_unit_features():
    qf, gf, _, _ = _clustered(1, 15, 50)
    qf, gf = torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1)
    config = RerankConfig(k1=10, k2=3)
    a = torch.cat([b for _, b in rerank_distance_chunks(qf, gf, config, "euclidean", 64)])
    b = torch.cat([b for _, b in rerank_distance_chunks(qf, gf, config, "cosine", 64)])
    torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


def test_rerank_metrics_equal_reference_on_dense_distances():
    qf, gf, q_pids, g_pids = _clustered(5, 20, 60)
    q_cams, g_cams = np.zeros(20, dtype=int), np.ones(60, dtype=int)
    config = EvalConfig(normalize=False, rerank=RerankConfig(k1=8, k2=3), max_rank=10)
    got = evaluate(qf, gf, *(torch.as_tensor(a) for a in (q_pids, g_pids, q_cams, g_cams)), config)
    dense = reference_rerank(qf.numpy(), gf.numpy(), 8, 3, 0.3)
    ref = reference_metrics(dense, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    assert got.mAP == pytest.approx(ref.mAP, abs=1e-6) and got.mINP == pytest.approx(ref.mINP, abs=1e-6)


def test_rerank_rejects_too_few_items():
    qf, gf, _, _ = _clustered(0, 3, 4)
    with pytest.raises(ValueError, match="k1=20"):
        list(rerank_distance_chunks(qf, gf, RerankConfig(), "euclidean", 8))


@pytest.mark.parametrize(("alpha", "k"), [(3.0, 5), (1.0, 2), (0.0, 7)])
def test_aqe_equals_reference(alpha, k):
    qf, gf, _, _ = _clustered(2, 13, 40)
    got = average_query_expansion(qf, gf, AQEConfig(alpha=alpha, k=k), chunk_size=5)
    want_q, want_g = reference_aqe(qf.numpy(), gf.numpy(), alpha, k)
    np.testing.assert_allclose(got.query.numpy(), want_q, atol=1e-12)
    np.testing.assert_allclose(got.gallery.numpy(), want_g, atol=1e-12)


def test_aqe_with_k1_is_identity():
    qf, gf, _, _ = _clustered(3, 5, 9)
    got = average_query_expansion(qf, gf, AQEConfig(alpha=3.0, k=1))
    unit = torch.nn.functional.normalize(qf, dim=1)
    # the nearest neighbour of a vector is itself with similarity 1
    torch.testing.assert_close(got.query, qf * ((unit * unit).sum(1, keepdim=True) ** 3))
