"""Which queries a ranked-list picture shows and their top-k: per-query AP from the evaluation's own
accumulator, checked against ``reid.evaluation.evaluate`` (mAP, CMC) and a full stable argsort."""

from __future__ import annotations

import pytest
import torch

from reid.data.records import Record
from reid.evaluation import EvalConfig, RerankConfig, evaluate, pairwise_distance
from reid.evaluation.distances import top_k_stable
from reid.evaluation.pipeline import prepare_features
from reid.visualization.ranking import gallery_status, rank_queries, ranked_rows, select_queries


def problem(seed: int = 0) -> dict[str, torch.Tensor]:
    """7 queries, 31 gallery items (5 identities, 3 cameras, one pid -1 junk item); features near their
    identity's centre so that the APs differ."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(5, 8, generator=gen)
    q_pids = torch.tensor([0, 1, 2, 3, 4, 0, 2])
    g_pids = torch.cat([torch.arange(5).repeat(6), torch.tensor([-1])])
    q_cams = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    g_cams = torch.randint(0, 3, (31,), generator=gen)
    noise = 1.2
    return {
        "query_features": centres[q_pids] + noise * torch.randn(7, 8, generator=gen),
        "gallery_features": centres[g_pids.clamp(min=0)] + noise * torch.randn(31, 8, generator=gen),
        "query_pids": q_pids,
        "gallery_pids": g_pids,
        "query_camids": q_cams,
        "gallery_camids": g_cams,
    }


@pytest.mark.parametrize(
    "config",
    [
        EvalConfig(chunk_size=3),
        EvalConfig(metric="cosine", chunk_size=2),
        EvalConfig(rerank=RerankConfig(k1=6, k2=3)),
    ],
    ids=["euclidean", "cosine", "rerank"],
)
def test_per_query_ap_averages_to_the_evaluation_and_top_k_is_the_stable_order(config):
    data = problem()
    ranking = rank_queries(**data, config=config, top_k=5)
    reference = evaluate(**data, config=config)
    valid = ranking.valid
    assert ranking.result.mAP == pytest.approx(reference.mAP, abs=1e-12)
    assert torch.equal(ranking.result.cmc, reference.cmc)
    assert float(ranking.ap[valid].mean()) == pytest.approx(reference.mAP, abs=1e-12)
    assert int(valid.sum()) == reference.num_valid_queries
    if config.rerank is None:  # the plain distances: compare with a full stable argsort
        query, gallery = prepare_features(data["query_features"], data["gallery_features"], config)
        dist = pairwise_distance(query, gallery, config.metric)
        order = torch.argsort(dist, dim=1, stable=True)[:, :5]
        assert torch.equal(ranking.top_index, order)
        assert torch.allclose(ranking.top_distance, torch.gather(dist, 1, order))


def test_top_k_breaks_ties_by_the_earlier_column():
    dist = torch.tensor([[0.5, 0.2, 0.2, 0.9, 0.2], [0.3, 0.3, 0.3, 0.3, 0.1]])
    indices, distances = top_k_stable(dist, 3)
    assert indices.tolist() == [[1, 2, 4], [4, 0, 1]]
    assert torch.equal(distances, torch.tensor([[0.2, 0.2, 0.2], [0.1, 0.3, 0.3]]))
    assert top_k_stable(dist, 9)[0].shape == (2, 5)  # k beyond the gallery: the whole gallery


def test_worst_then_best_queries_without_repeats():
    data = problem(1)
    ranking = rank_queries(**data, config=EvalConfig(), top_k=3)
    chosen = select_queries(ranking, worst=2, best=10)
    worst = [q for q, label in chosen if label == "worst"]
    best = [q for q, label in chosen if label == "best"]
    valid = torch.nonzero(ranking.valid).squeeze(1).tolist()
    assert len(worst) == 2 and sorted(worst + best) == sorted(valid)  # every valid query once
    aps = ranking.ap.tolist()
    assert aps[worst[0]] <= aps[worst[1]] <= min(aps[q] for q in best)
    assert [aps[q] for q in best] == sorted((aps[q] for q in best), reverse=True)


def test_statuses_follow_the_scoring_protocol():
    assert gallery_status(3, 0, 3, 1) == "match"
    assert gallery_status(3, 0, 3, 0) == "junk"  # same identity, same camera: not scored
    assert gallery_status(3, 0, -1, 1) == "junk"  # unlabelled junk
    assert gallery_status(3, 0, 0, 1) == "wrong"  # distractors are ordinary negatives


def test_rows_carry_paths_distances_and_statuses():
    data = problem(2)
    ranking = rank_queries(**data, config=EvalConfig(), top_k=4)
    query_records = [
        Record(f"q{i}.jpg", int(p), int(c))
        for i, (p, c) in enumerate(zip(data["query_pids"], data["query_camids"]))
    ]
    gallery_records = [
        Record(f"g{j}.jpg", int(p), int(c))
        for j, (p, c) in enumerate(zip(data["gallery_pids"], data["gallery_camids"]))
    ]
    (row,) = ranked_rows(ranking, [(3, "worst")], query_records, gallery_records)
    shown = ranking.top_index[3].tolist()
    assert [str(p) for p in row.gallery] == [f"g{j}.jpg" for j in shown]
    assert list(row.distances) == pytest.approx(ranking.top_distance[3].tolist())
    expected = [
        gallery_status(3, 0, int(data["gallery_pids"][j]), int(data["gallery_camids"][j])) for j in shown
    ]
    assert list(row.status) == expected  # camid 0 is shown as the file names number it: cam 1
    assert row.title.startswith("worst: query 3 (id 3, cam 1)")
    with pytest.raises(ValueError, match="7 ranked queries but 2 query records"):
        ranked_rows(ranking, [(0, "best")], query_records[:2], gallery_records)
