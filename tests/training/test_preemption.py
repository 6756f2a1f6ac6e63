"""SIGTERM mid-epoch: last.ckpt at the step boundary, a non-zero exit, and an exact resume."""

from __future__ import annotations

import os
import subprocess
import sys

from reid.config import CONFIG_DIR
from reid.run import run
from reid.training.checkpoint_io import AtomicCheckpointIO
from reid.training.preemption import SIGTERM_EXIT_STATUS
from tests.conftest import epoch_steps
from tests.training.test_resume import RESUMABLE, _assert_equal, _weights

REPO = CONFIG_DIR.parent
# every_n_train_steps is off: without the preemption handling no checkpoint exists mid-epoch
PREEMPTIBLE = [o for o in RESUMABLE if "every_n_train_steps" not in o]
SIGTERM_AT = 8  # global step whose batch is running when the signal arrives (in epoch 1)


# ~25 s (a `python -m reid.run` subprocess and two in-process runs): kept in the fast suite
def test_sigterm_writes_last_at_the_step_and_resume_is_exact(compose_config, tiny_data_dir, tmp_path):
    full = compose_config(*PREEMPTIBLE)
    steps = epoch_steps(full, 2)
    assert steps[0] < SIGTERM_AT + 1 < sum(steps)
    full.paths.output_dir = str(tmp_path / "full")
    run(full)  # also renders the tiny data tree the subprocess reads

    out = tmp_path / "preempted"
    signal_at = [
        "+callbacks.sigterm._target_=tests.training.callbacks.SigtermAtStep",
        f"+callbacks.sigterm.step={SIGTERM_AT}",
    ]
    command = [sys.executable, "-m", "reid.run", f"paths.data_dir={tiny_data_dir}", f"hydra.run.dir={out}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [*command, *PREEMPTIBLE, *signal_at], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == SIGTERM_EXIT_STATUS, result.stderr[-3000:]
    assert "ckpt_path=last" in result.stderr + result.stdout  # the log says how to resume
    mid = AtomicCheckpointIO().load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert mid["global_step"] == SIGTERM_AT + 1  # the running step finished and was saved
    assert not (out / "results.json").exists()

    resumed = compose_config(*PREEMPTIBLE, "ckpt_path=last")
    resumed.paths.output_dir = str(out)
    run(resumed)
    final = _weights(str(out))
    assert int(final["global_step"]) == sum(steps)
    _assert_equal(final, _weights(full.paths.output_dir))
