"""Runs in each spawned process of the DDP test: one DistributedSampler-style shard per rank."""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist

from reid.evaluation import EvalConfig, ReIDEvaluator

NUM_QUERY, NUM_GALLERY, WORLD = 11, 40, 2


def dataset():
    """Features and labels of the query+gallery loader, in loader order."""
    rng = np.random.default_rng(0)
    n = NUM_QUERY + NUM_GALLERY
    pids = rng.integers(0, 6, n)
    features = torch.as_tensor(rng.normal(size=(6, 8))[pids] + rng.normal(size=(n, 8)), dtype=torch.float32)
    return features, torch.as_tensor(pids), torch.as_tensor(rng.integers(0, 3, n))


def shard(rank: int, n: int) -> list[int]:
    """DistributedSampler(shuffle=False): pad by repeating the head, then take every WORLD-th index."""
    total = -(-n // WORLD) * WORLD
    indices = list(range(n)) + list(range(total - n))
    return indices[rank:total:WORLD]


def run(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        features, pids, camids = dataset()
        evaluator = ReIDEvaluator(NUM_QUERY, EvalConfig(max_rank=10))
        mine = torch.tensor(shard(rank, len(pids)))
        for batch in mine.split(4):
            evaluator.update(features[batch], pids[batch], camids[batch], batch)
        result = evaluator.compute()
        torch.save({"mAP": result.mAP, "mINP": result.mINP, "cmc": result.cmc}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    run(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
