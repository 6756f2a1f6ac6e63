from collections import Counter

import numpy as np
import pytest

from reid.data.samplers import IdentitySampler


def _pids(seed: int = 0, num_ids: int = 23) -> list[int]:
    rng = np.random.default_rng(seed)
    # identities with 1..12 images, shuffled in dataset order
    pids = [pid for pid in range(num_ids) for _ in range(int(rng.integers(1, 13)))]
    return [int(p) for p in rng.permutation(pids)]


def _batches(sampler: IdentitySampler, batch_size: int) -> list[list[int]]:
    indices = list(sampler)
    assert len(indices) == len(sampler)
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


def test_every_batch_has_p_identities_with_k_images():
    pids = _pids()
    sampler = IdentitySampler(pids, batch_size=12, num_instances=3, seed=1)
    batches = _batches(sampler, 12)
    assert len(batches) == sampler.batches_per_epoch > 0
    for batch in batches:
        counts = Counter(pids[i] for i in batch)
        assert len(counts) == 4 and set(counts.values()) == {3}


def test_epoch_length_is_fixed_and_plan_depends_on_seed_and_epoch():
    pids = _pids()
    sampler = IdentitySampler(pids, batch_size=8, num_instances=2, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert len(first) == len(second) == len(sampler)
    assert first != second
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(IdentitySampler(pids, batch_size=8, num_instances=2, seed=4)) != first


def test_length_counts_chunks_of_k():
    pids = [0] * 5 + [1] * 2 + [2] * 1 + [3] * 8  # chunks of 2: 2 + 1 + 1 (resampled) + 4 = 8
    sampler = IdentitySampler(pids, batch_size=4, num_instances=2)
    assert sampler.batches_per_epoch == 4
    assert len(sampler) == 16


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_identities_and_union_equals_single_process(world_size):
    pids = _pids(seed=5, num_ids=40)
    per_rank = [
        _batches(IdentitySampler(pids, 8, 2, seed=7, num_replicas=world_size, rank=r), 8)
        for r in range(world_size)
    ]
    single = _batches(IdentitySampler(pids, 8 * world_size, 2, seed=7), 8 * world_size)
    assert len({len(b) for b in per_rank}) == 1  # equal step counts
    assert len(single) == len(per_rank[0])
    for step, global_batch in enumerate(single):
        rank_ids = [{pids[i] for i in per_rank[r][step]} for r in range(world_size)]
        assert sum(len(s) for s in rank_ids) == len(set().union(*rank_ids))  # disjoint
        assert sorted(i for r in range(world_size) for i in per_rank[r][step]) == sorted(global_batch)


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(ValueError, match="distinct identities"):
        IdentitySampler([0, 0, 1, 1], batch_size=8, num_instances=2)
    with pytest.raises(ValueError, match="multiple of num_instances"):
        IdentitySampler([0, 1], batch_size=7, num_instances=2)
