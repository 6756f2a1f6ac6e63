import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_worker import NUM_QUERY, dataset, shard
from reference import reference_metrics
from rich.console import Console

from reid.data.records import Trial
from reid.evaluation import EvalConfig, ReIDEvaluator, evaluate, evaluate_trials, pairwise_distance
from reid.evaluation.report import print_results, write_json


def _split(features, pids, camids):
    q, g = slice(0, NUM_QUERY), slice(NUM_QUERY, None)
    return features[q], features[g], pids[q], pids[g], camids[q], camids[g]


def test_padded_shuffled_batches_equal_direct_evaluation():
    features, pids, camids = dataset()
    n = len(pids)
    order = torch.cat(
        [torch.randperm(n, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 5, n - 1])]
    )
    evaluator = ReIDEvaluator(NUM_QUERY, EvalConfig(max_rank=10))
    for batch in order.split(6):
        evaluator.update(features[batch], pids[batch], camids[batch], batch)
    got = evaluator.compute()
    want = evaluate(*_split(features, pids, camids), EvalConfig(max_rank=10))
    assert got.mAP == want.mAP and got.mINP == want.mINP and torch.equal(got.cmc, want.cmc)
    assert got.num_queries == NUM_QUERY
    evaluator.reset()
    with pytest.raises(RuntimeError, match="no features"):
        evaluator.compute()


def test_missing_indices_are_reported():
    features, pids, camids = dataset()
    evaluator = ReIDEvaluator(NUM_QUERY, EvalConfig())
    keep = torch.arange(1, len(pids))
    evaluator.update(features[keep], pids[keep], camids[keep], keep)
    with pytest.raises(ValueError, match="expected indices 0..N-1"):
        evaluator.compute()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_single_process(tmp_path):
    assert (
        sorted(set(shard(0, 51) + shard(1, 51))) == list(range(51)) and len(shard(0, 51) + shard(1, 51)) == 52
    )
    # Separate interpreters with a clean sys.path (mp.spawn would inherit pytest's, where tests/ssl
    # shadows the standard library's ssl module).
    worker, root = Path(__file__).with_name("ddp_worker.py"), Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    port = str(_free_port())
    procs = [
        subprocess.Popen([sys.executable, str(worker), str(rank), port, str(tmp_path)], env=env, cwd=root)
        for rank in range(2)
    ]
    assert [proc.wait(timeout=240) for proc in procs] == [0, 0]
    features, pids, camids = dataset()
    want = evaluate(*_split(features, pids, camids), EvalConfig(max_rank=10))
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["mAP"] == want.mAP and got["mINP"] == want.mINP and torch.equal(got["cmc"], want.cmc)


def test_vehicleid_trials_average_reference_without_camera_filter():
    rng = np.random.default_rng(4)
    pids = rng.integers(0, 8, 60)
    features = torch.as_tensor(rng.normal(size=(8, 6))[pids] + rng.normal(size=(60, 6)))
    trials = []
    for _ in range(3):
        gallery = np.array([rng.choice(np.flatnonzero(pids == p)) for p in np.unique(pids)])
        trials.append(Trial(np.setdiff1d(np.arange(60), gallery), gallery))
    config = EvalConfig(normalize=False, ranks=(1, 5), max_rank=5)
    got = evaluate_trials(features, torch.as_tensor(pids), trials, config)
    refs = []
    for trial in trials:
        q, g = trial.query_index, trial.gallery_index
        dist = pairwise_distance(features[q], features[g], "euclidean").numpy()
        refs.append(reference_metrics(dist, pids[q], pids[g], np.zeros(len(q)), np.ones(len(g)), max_rank=5))
    assert got.mAP == pytest.approx(np.mean([r.mAP for r in refs]), abs=1e-6)
    np.testing.assert_allclose(got.cmc.numpy(), np.mean([r.cmc for r in refs], 0), atol=1e-6)
    assert got.num_queries == 3 * (60 - 8)

    evaluator = ReIDEvaluator(60, config, trials=trials)
    evaluator.update(features, torch.as_tensor(pids), torch.zeros(60, dtype=torch.long), torch.arange(60))
    assert evaluator.compute().mAP == got.mAP


def test_report_prints_and_writes_json(tmp_path):
    features, pids, camids = dataset()
    result = evaluate(*_split(features, pids, camids), EvalConfig())
    console = Console(record=True, width=120)
    print_results(result, title="val", console=console)
    text = console.export_text()
    assert f"{100 * result.mAP:.2f}" in text and "mINP" in text
    path = write_json(result, tmp_path / "ckpt" / "metrics.json", extra={"epoch": 3})
    record = json.loads(path.read_text())
    assert record["mAP"] == pytest.approx(100 * result.mAP) and record["R10"] == pytest.approx(
        100 * float(result.cmc[9])
    )
    assert record["epoch"] == 3 and len(record["cmc"]) == 50
