"""Two "nodes" of one process each, launched as a cluster launches them (``torchrun --nnodes 2 --node_rank
r`` on 127.0.0.1): Lightning reads the torchrun environment (``TorchElasticEnvironment``), the two
processes form one gloo group across the nodes, train as one, and finish with identical weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch

from reid.config import CONFIG_DIR
from tests.training.test_ddp_equals_one_process import STEPS, SUPERVISED, TINY


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_two_torchrun_nodes_finish_with_identical_weights(tmp_path, tiny_data_dir):
    out, port = tmp_path / "run", _free_port()
    overrides = [*SUPERVISED, "model=transreid_tiny", *TINY, f"paths.data_dir={tiny_data_dir}"]
    overrides += ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2"]
    overrides += ["trainer.precision=32-true", f"hydra.run.dir={out}"]
    overrides += [
        "+callbacks.weights._target_=tests.training.callbacks.FinalWeights",
        f"+callbacks.weights.folder={out}",
    ]
    assert "trainer.max_steps=3" in STEPS
    env = {**os.environ, "PYTHONPATH": str(CONFIG_DIR.parent)}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--node_rank",
                str(node),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                port,
                "-m",
                "reid.run",
                *overrides,
            ],
            cwd=CONFIG_DIR.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in range(2)
    ]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), logs[0][-3000:] + logs[1][-3000:]
    weights = [torch.load(out / f"weights_rank{rank}.pt") for rank in range(2)]
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
    assert (out / "checkpoints" / "last.ckpt").is_file()
