"""The P x K sampler: batch structure, DDP sharding, and the official epoch (tests/official/sampler.py)."""

import json
import random
from collections import Counter

import numpy as np
import pytest
from scipy.stats import ks_2samp

from reid.data.samplers import IdentitySampler
from tests.conftest import TINY_RUN
from tests.official.sampler import RandomIdentitySampler


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
    assert len(batches) == sampler.batches_in_epoch(0) > 0
    for batch in batches:
        counts = Counter(pids[i] for i in batch)
        assert len(counts) == 4 and set(counts.values()) == {3}


def test_the_plan_depends_on_seed_and_epoch_only():
    pids = _pids()
    sampler = IdentitySampler(pids, batch_size=8, num_instances=2, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    assert len(first) == len(sampler) == 8 * sampler.batches_in_epoch(0)
    sampler.set_epoch(1)
    second = list(sampler)
    assert len(second) == len(sampler) == 8 * sampler.batches_in_epoch(1)
    assert first != second
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(IdentitySampler(pids, batch_size=8, num_instances=2, seed=4)) != first


def test_an_epoch_ends_when_fewer_than_p_identities_have_chunks_left():
    """Chunks of 2: identity 0 has 2, 1 and 2 one each (2 resampled), 3 four; P = 2. Every batch uses two
    chunks; identity 3's four chunks need three partners, so at most 4 batches, and the epoch ends as soon
    as only identity 3 has chunks left (fewer than P): after 4 batches if its chunks were spread out."""
    pids = [0] * 5 + [1] * 2 + [2] * 1 + [3] * 8
    sampler = IdentitySampler(pids, batch_size=4, num_instances=2)
    counts = {sampler.batches_in_epoch(epoch) for epoch in range(50)}
    assert counts <= {2, 3, 4} and len(counts) > 1  # the draws decide; never above chunks / P
    assert len(RandomIdentitySampler(pids, 4, 2)) == 16  # the official estimate: 8 chunks of 2


def _market_like_pids(seed: int = 0) -> list[int]:
    """751 identities, 12,936 images (Market-1501's training split), 2 to 72 images each, skewed as its."""
    rng = np.random.default_rng(seed)
    counts = np.clip(np.round(rng.lognormal(np.log(15), 0.6, 751)), 2, 72).astype(int)
    while counts.sum() != 12936:  # nudge to the exact total
        i = rng.integers(751)
        counts[i] = np.clip(counts[i] + np.sign(12936 - counts.sum()), 2, 72)
    return [pid for pid, count in enumerate(counts) for _ in range(count)]


def test_the_epoch_length_and_structure_are_the_official_samplers():
    """On Market-like identity counts at 16 x 4, the number of batches per epoch has the official sampler's
    distribution over 150 epochs each (KS p > 0.001; both seeded), batches are P distinct identities x K
    of their images, and no chunk repeats within an epoch. The old fixed-length epoch (every epoch at
    the chunk count / P, refilled from a fresh shuffle) is the longest an official epoch can be."""
    pids = _market_like_pids()
    ours = IdentitySampler(pids, batch_size=64, num_instances=4, seed=0)
    random.seed(0)
    np.random.seed(0)
    official = RandomIdentitySampler(pids, 64, 4)
    ours_counts = [ours.batches_in_epoch(epoch) for epoch in range(150)]
    official_counts = [len(list(official)) // 64 for _ in range(150)]
    assert ks_2samp(ours_counts, official_counts).pvalue > 1e-3
    assert abs(np.mean(ours_counts) - np.mean(official_counts)) < 1.0
    old_fixed = sum(max(1, np.sum(np.asarray(pids) == p) // 4) for p in set(pids)) // 16
    assert old_fixed >= max(official_counts) and np.mean(official_counts) < old_fixed - 0.5
    assert len(official) // 64 >= max(ours_counts)  # never above the official estimate
    ours.set_epoch(3)
    batches = _batches(ours, 64)
    assert len(batches) == ours_counts[3]
    seen = set()
    for batch in batches:
        counts = Counter(pids[i] for i in batch)
        assert len(counts) == 16 and set(counts.values()) == {4}
        chunks = [tuple(batch[i : i + 4]) for i in range(0, 64, 4)]
        assert all(len({pids[i] for i in chunk}) == 1 for chunk in chunks)
        assert not seen & set(chunks)
        seen |= set(chunks)


def test_the_datamodule_trains_each_epoch_at_its_own_length(compose_config, tmp_path):
    """A tiny run: Lightning rebuilds the loader each epoch (reload_dataloaders_every_n_epochs 1), so every
    epoch trains the sampler's plan for it, Lightning knows that length, and validates at its end. Without
    the reload the first epoch's length would stand for all: later epochs cut short or their end unseen."""
    from reid.run import run

    record = tmp_path / "epochs.json"
    cfg = compose_config(
        *TINY_RUN, "trainer.max_epochs=5", "test=false", "data.num_workers=0",
        "+callbacks.steps._target_=tests.training.callbacks.EpochSteps", f"+callbacks.steps.path={record}",
    )  # fmt: skip
    run(cfg)
    seen = json.loads(record.read_text())
    assert seen["trained"] == seen["lightning"] == seen["sampler"] and len(set(seen["trained"])) > 1
    assert seen["validated"] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_identities_and_union_equals_single_process(world_size):
    pids = _pids(seed=5, num_ids=40)
    per_rank = [  # the global batch of 4 x world identities, 4 identities x K=2 for each rank
        _batches(IdentitySampler(pids, 8 * world_size, 2, seed=7, num_replicas=world_size, rank=r), 8)
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
    with pytest.raises(
        ValueError, match=r"global batch of 16 identities x K=4, and 3 processes.*batch_size=60"
    ):
        IdentitySampler(list(range(40)) * 4, batch_size=64, num_instances=4, num_replicas=3, rank=0)


def test_the_global_batch_is_the_recipes_whatever_the_number_of_processes():
    """data.batch_size=64 under 4 processes: 16 images (4 identities x 4) each, and the four shares of a step
    together are the one-process batch of the same seed, in rank order."""
    pids = _pids(seed=2, num_ids=40)
    single = _batches(IdentitySampler(pids, 16, 2, seed=3), 16)
    shares = [_batches(IdentitySampler(pids, 16, 2, seed=3, num_replicas=4, rank=r), 4) for r in range(4)]
    assert [len(s) for s in shares] == [len(single)] * 4
    for step, batch in enumerate(single):
        assert [i for r in range(4) for i in shares[r][step]] == batch


def test_per_item_seeds_follow_the_global_slot_on_every_rank():
    """The augmentation of the image at a global batch position is the same under 1 or 2 processes."""
    from reid.data.resumable import ResumableKeySampler

    pids = _pids(seed=4, num_ids=30)
    one = list(ResumableKeySampler(IdentitySampler(pids, 8, 2, seed=1), 8))
    two = [
        list(ResumableKeySampler(IdentitySampler(pids, 8, 2, seed=1, num_replicas=2, rank=r), 4, 2, r))
        for r in (0, 1)
    ]
    merged = sorted(two[0] + two[1], key=lambda key: key.slot)
    assert merged == one  # same (epoch, global slot, image) triples
