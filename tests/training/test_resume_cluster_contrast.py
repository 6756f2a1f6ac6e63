"""Exact resume of a Cluster Contrast run killed mid-epoch: pseudo labels, memory and sampling included.

Mirrors ``tests/training/test_resume.py``: a run of 2 epochs x 4 steps (``experiment=usl_demo``, the
48 tiny synthetic images, 2 loader workers, drop path on) is killed in epoch 1 and resumed from
``last.ckpt``; the resumed run must not re-cluster (its epoch's labels and memory come from the
checkpoint), and its final weights, memory and pseudo labels equal the uninterrupted run's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reid.tasks.cluster_contrast import STATE_KEY
from reid.training.checkpoint_io import AtomicCheckpointIO
from tests.tasks.test_cluster_contrast import USL_DEMO
from tests.training.test_resume import CHECKPOINT_EVERY_STEP, _assert_equal, _kill_then_resume

RESUMABLE = [*USL_DEMO, *CHECKPOINT_EVERY_STEP]
KILL_AFTER = 6  # steps: the 2nd step of epoch 1 (4 steps an epoch)


def _final(output_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = AtomicCheckpointIO().load_checkpoint(output_dir / "checkpoints" / "last.ckpt")
    state = checkpoint[STATE_KEY]
    return checkpoint["state_dict"] | {
        "global_step": torch.tensor(checkpoint["global_step"]),
        "memory": state["memory"],
        "pseudo_labels": state["pseudo_labels"],
        "clustered_epoch": torch.tensor(state["epoch"]),
    }


def test_killed_usl_run_resumed_from_last_equals_uninterrupted(compose_config, tmp_path):
    mid = _kill_then_resume(compose_config, tmp_path, RESUMABLE, KILL_AFTER)
    assert mid["global_step"] == KILL_AFTER - 1
    assert mid["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches_done": 1}]
    assert mid[STATE_KEY]["epoch"] == 1  # the killed epoch's clustering is in the checkpoint
    final = _final(tmp_path / "resumed")
    assert int(final["global_step"]) == 8
    _assert_equal(final, _final(tmp_path / "full"))
