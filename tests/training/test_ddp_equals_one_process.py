"""N processes train as one: three steps on two gloo processes equal three steps of one process.

For a tiny TransReID (SIE + JPM), a tiny BoT (with center loss) and a tiny Cluster Contrast model, and for
DINO, ``python -m reid.run`` runs once with one process and once under ``trainer=ddp
trainer.devices=2`` on CPU, same seed, same ``data.batch_size`` (the global batch: each process takes
half, whole identities). Equal when the per-step loss (the mean of the two processes' losses, each of
its half) agrees to 1e-5 relative and every weight of ``last.ckpt`` to 1e-5. What makes it hold: the
sampler's global batch and per-item seeds by global slot (``reid.data.samplers``,
``reid.data.resumable``), triplet mining and the memory update over the gathered batch
(``reid.distributed``), batch normalisation over the global batch (``GlobalBatchNorm`` on CPU), and
DDP's gradient average. DINO keeps its own convention (``data.batch_size`` per process, the lr scaled
by the total batch): two processes of batch b equal one process of 2b. Model randomness (drop path) is
off, since a process draws masks for its own samples only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reid.config import CONFIG_DIR
from reid.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY_SSL_DATA
from tests.tasks.test_cluster_contrast import USL_DEMO

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
TINY = ["+model.backbone.depth=1", "+model.backbone.embed_dim=32", "+model.backbone.num_heads=2"]
STEPS = [
    "trainer.max_steps=3",
    "test=false",
    "evaluate_before_fit=false",
    "callbacks.progress_bar=null",
    "callbacks.learning_rate_monitor=null",
    "trainer.enable_model_summary=false",
    "trainer.check_val_every_n_epoch=100",
    "logger=csv",
]
SUPERVISED = ["data=synthetic_tiny", "trainer=cpu", "data.num_workers=0", *STEPS]
# TransReID's own optimiser (SGD 0.008, momentum 0.9, biases x2) on the tiny model, not the demo's AdamW:
# Adam divides by the root of the squared gradient, so a parameter whose gradient is ~0 turns the last-bit
# difference of a sum taken in another order (one process vs an all-reduce) into a step of lr's size.
TRANSREID_SGD = ["model.optimizer._target_=torch.optim.SGD", "model.optimizer.lr=0.008"]
TRANSREID_SGD += ["+model.optimizer.momentum=0.9", "model.optimizer.weight_decay=1e-4"]
TRANSREID_SGD += ["model.param_groups.bias_lr_factor=2.0", "model.param_groups.exempt_norm_and_tokens=false"]
FAMILIES = {
    "transreid_sie_jpm": [*SUPERVISED, "model=transreid_tiny", *TINY, *TRANSREID_SGD],
    "bot_center": [*SUPERVISED, "model=bot_tiny", "model.schedule.warmup_epochs=0"],
    # the official lr: the tiny config's 0.01 (for learning in a few CPU steps) takes the loss from 0.5 to 14
    # in one step, a regime where rounding differences of the summed gradients grow past 1e-5
    "cluster_contrast": [*USL_DEMO, "data.num_workers=0", *STEPS, "model.optimizer.lr=3.5e-4"],
}


def _run(out: Path, data_dir: Path, overrides: list[str]) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Per-step losses (mean over processes) and the final weights of one ``reid.run``."""
    command = [
        sys.executable,
        "-m",
        "reid.run",
        *overrides,
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={out}",
    ]
    command += [
        "+callbacks.losses._target_=tests.training.callbacks.StepLosses",
        f"+callbacks.losses.folder={out}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=CONFIG_DIR.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    per_rank = [json.loads(path.read_text()) for path in sorted(out.glob("losses_rank*.json"))]
    assert per_rank and all(len(losses) == 3 for losses in per_rank)
    losses = [sum(step) / len(per_rank) for step in zip(*per_rank, strict=True)]
    state = AtomicCheckpointIO().load_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
    return losses, state


def _assert_equal_runs(one: tuple, two: tuple) -> None:
    (losses_one, state_one), (losses_two, state_two) = one, two
    for a, b in zip(losses_one, losses_two, strict=True):
        assert b == pytest.approx(a, rel=1e-5)
    assert state_one.keys() == state_two.keys()
    for name, value in state_one.items():
        if value.is_floating_point():
            assert torch.allclose(state_two[name], value, rtol=1e-5, atol=1e-5), name


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_two_processes_train_as_one(family, tmp_path, tiny_data_dir):
    overrides = FAMILIES[family]
    one = _run(tmp_path / "one", tiny_data_dir, overrides)
    two = _run(tmp_path / "two", tiny_data_dir, [*overrides, *DDP])
    _assert_equal_runs(one, two)


PRETRAINING = [
    "experiment=dino_lup",
    "model=dino_tiny",
    "data=synthetic_ssl",
    *TINY_SSL_DATA,
    *(f"+{override}" for override in TINY),  # ++: dino_tiny sets them
    "model.drop_path_rate=0.0",
    "model.out_dim=64",
    "model.hidden_dim=32",
    "model.bottleneck_dim=16",
    "data.augment.num_local=2",
    "data.augment.global_size=[32,16]",
    "data.augment.local_size=[16,8]",
    "callbacks.knn_monitor=null",
    "trainer=cpu",
    *STEPS,
]


def test_two_dino_processes_of_batch_b_train_as_one_process_of_2b(tmp_path, tiny_data_dir):
    """DINO's convention (main_dino.py): batch per process, lr x total batch / 256; the teacher's EMA and
    the centre (all-reduced) are the same on every process, so its weights are compared too."""
    one = _run(tmp_path / "one", tiny_data_dir, [*PRETRAINING, "data.batch_size=8"])
    weights = ["+callbacks.weights._target_=tests.training.callbacks.FinalWeights"]
    weights.append(f"+callbacks.weights.folder={tmp_path / 'two'}")
    two = _run(tmp_path / "two", tiny_data_dir, [*PRETRAINING, "data.batch_size=4", *DDP, *weights])
    _assert_equal_runs(one, two)
    ranks = [torch.load(tmp_path / "two" / f"weights_rank{rank}.pt") for rank in range(2)]
    shared = [name for name in ranks[0] if name.startswith(("teacher.", "criterion."))]
    assert any("center" in name for name in shared) and any(name.startswith("teacher.") for name in shared)
    for name in shared:  # the EMA teacher and the centres are the same on both processes
        assert torch.equal(ranks[0][name], ranks[1][name]), name
