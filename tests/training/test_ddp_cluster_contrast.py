"""Cluster Contrast under DDP with 2 CPU processes on gloo through `python -m reid.run`.

What DDP must keep: every rank trains on rank 0's clustering (pseudo labels broadcast), the cluster
memory stays identical on every rank through training (its momentum update all-gathers the ranks'
batches, as the official single-process DataParallel update sees the whole batch), and each rank draws
its own shard of the one seeded P x K stream over the pseudo labels.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from reid.config import CONFIG_DIR
from reid.data.pseudo_label_sampler import PseudoLabelSampler
from tests.tasks.test_cluster_contrast import USL_DEMO

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.sync_batchnorm=false"]


def test_two_process_usl_run_shares_the_clustering_and_the_memory(tmp_path, tiny_data_dir, compose_config):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "reid.run",
        *USL_DEMO,
        "test=false",
        f"paths.data_dir={tiny_data_dir}",
        f"hydra.run.dir={out}",
        "+callbacks.recorder._target_=tests.training.callbacks.ClusterStateRecorder",
        f"+callbacks.recorder.folder={out}/batches",
        *DDP,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=Path(CONFIG_DIR).parent)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / "batches" / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2 * 4  # 2 epochs of data.iterations=4 on each rank
    for a, b in zip(*ranks, strict=True):
        assert a["epoch"] == b["epoch"]
        assert a.get("labels") == b.get("labels")  # rank 0's clustering on both
        assert a["memory_sum"] == pytest.approx(b["memory_sum"], rel=1e-6)
    cfg = compose_config(*USL_DEMO)
    datamodule = instantiate(cfg.data)
    camids = [r.camid for r in datamodule.train_records]
    for epoch in (0, 1):
        labels = np.array(next(b["labels"] for b in ranks[0] if b["epoch"] == epoch))
        assert labels.max() >= 0
        for rank, batches in enumerate(ranks):
            sampler = PseudoLabelSampler(
                lambda labels=labels: labels,
                camids,
                batch_size=cfg.data.batch_size,
                num_instances=cfg.data.num_instances,
                iterations=cfg.data.iterations,
                seed=cfg.seed,
                num_replicas=2,
                rank=rank,
            )
            sampler.set_epoch(epoch)
            drawn = [i for b in batches if b["epoch"] == epoch for i in b["index"]]
            assert drawn == list(sampler)
