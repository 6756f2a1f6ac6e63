"""Two gloo processes with half a batch each compute the one-process loss, gradients and BN statistics.

``reid.distributed.gather_with_grad`` (the triplet loss mines over every rank's rows) and
``reid.training.sync_batchnorm.GlobalBatchNorm`` (statistics of the global batch, on CPU too), with
the gradients averaged as DDP averages them (tests/training/gloo_worker.py). Without them each process
mines and normalises its own half: the old behaviour, checked here to differ.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from tests.training.gloo_worker import BATCH, batch, network, step


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _two_processes(tmp_path: Path) -> list[dict]:
    worker, root = Path(__file__).with_name("gloo_worker.py"), Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    port = _free_port()
    procs = [
        subprocess.Popen([sys.executable, str(worker), str(rank), port, str(tmp_path)], env=env, cwd=root)
        for rank in range(2)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]


def test_two_processes_give_the_one_process_loss_gradients_and_statistics(tmp_path):
    ranks = _two_processes(tmp_path)
    net = network()
    images, labels = batch()
    loss = step(net, images, labels)
    assert float(ranks[0]["loss"]) == float(ranks[1]["loss"])  # averaged: what DDP's logs (sync_dist) show
    assert torch.allclose(ranks[0]["loss"], loss, rtol=1e-5)
    for name, param in net.named_parameters():
        if param.grad is None:
            continue
        for rank in ranks:
            assert torch.allclose(rank["grads"][name], param.grad, rtol=1e-4, atol=1e-6), name
    for name, value in net.named_buffers():
        for rank in ranks:
            assert torch.allclose(rank["buffers"][name], value, rtol=1e-5, atol=1e-6), name


def test_each_half_alone_is_another_loss():
    """What two processes computed before: each mines and normalises its own half."""
    net = network()
    images, labels = batch()
    halves = [step(network(), images[s], labels[s]) for s in (slice(0, BATCH // 2), slice(BATCH // 2, None))]
    whole = step(net, images, labels)
    assert abs(float(sum(halves) / 2) - float(whole)) > 1e-3
