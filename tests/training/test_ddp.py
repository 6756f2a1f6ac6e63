"""DDP with 2 CPU processes on gloo through `python -m reid.run`: P x K sharding and evaluation.

``data.batch_size`` is the global batch: rank r of a 2-process run takes identities [r*P/2, (r+1)*P/2) of
every global batch of P identities: disjoint identities per step, equal step counts, and the union of
a step equals the one-process batch of the same seed. Evaluation gathers features across ranks: the
untrained model's metrics equal those of one process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from reid.config import CONFIG_DIR
from reid.data.samplers import IdentitySampler

COMMON = [
    "data=synthetic_tiny",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=null",
    "+model.backbone.depth=1",
    "+model.backbone.embed_dim=32",
    "+model.backbone.num_heads=2",
    "evaluate_before_fit=true",
    "test=false",
    "+callbacks.recorder._target_=tests.training.callbacks.BatchRecorder",
]


def _run(out: Path, data_dir: Path, *extra: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "reid.run",
        *COMMON,
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={out}",
        f"+callbacks.recorder.folder={out}/batches",
        *extra,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=Path(CONFIG_DIR).parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_two_process_gloo_run_shards_identities_and_matches_single_process_metrics(
    tmp_path, tiny_data_dir, compose_config
):
    single = _run(tmp_path / "single", tiny_data_dir)
    ddp = _run(
        tmp_path / "ddp",
        tiny_data_dir,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.sync_batchnorm=false",
    )
    for key in ("mAP", "R1", "mINP"):
        assert ddp["untrained"][key] == pytest.approx(single["untrained"][key], abs=1e-4)

    ranks = [json.loads((tmp_path / "ddp" / "batches" / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) > 0
    union = []
    for a, b in zip(*ranks):
        assert not set(a["pids"]) & set(b["pids"]), "ranks saw the same identity in one step"
        union += a["index"] + b["index"]
    # the single-process epoch of the same global batch (synthetic_tiny: batch 8, K 2, seed 0)
    pids = json.loads((tmp_path / "single" / "batches" / "rank0.json").read_text())
    assert pids  # the recorder ran in the single-process run too
    datamodule = instantiate(compose_config("data=synthetic_tiny").data)
    datamodule.setup()
    dataset_pids = [r.pid for r in datamodule.train_data.train]
    expected = list(IdentitySampler(dataset_pids, batch_size=8, num_instances=2, seed=0))
    assert union == expected
    single_batches = json.loads((tmp_path / "single" / "batches" / "rank0.json").read_text())
    assert len(single_batches) == len(ranks[0])  # as many steps as one process
