"""Nothing lost at any kill point (part 3): SIGTERM as a validation starts and during the final test, a kill
right after an epoch's checkpoint, two runs into one folder, step checkpoints before the first validation.

After SIGTERM anywhere the process exits 143, ``last.ckpt`` holds the latest completed step and the log
line says which, and ``ckpt_path=last`` resumes to the weights and the ``metrics.csv`` rows of an
uninterrupted run (no row lost, none doubled). Each kill comes from a callback at that exact point.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reid.config import CONFIG_DIR
from reid.run import run
from reid.training.checkpoint_io import AtomicCheckpointIO
from reid.training.preemption import SIGTERM_EXIT_STATUS
from reid.training.run_lock import RunFolderBusyError, RunFolderLock
from tests.conftest import epoch_steps
from tests.training.callbacks import SimulatedKillError
from tests.training.test_resume import RESUMABLE, _assert_equal, _weights

REPO = CONFIG_DIR.parent
# validation after every epoch, three epochs, no step checkpoints: only the end-of-epoch and the
# pre-validation saves exist, the points under test
VALIDATED = [o for o in RESUMABLE if "every_n_train_steps" not in o and "check_val_every_n_epoch" not in o]
VALIDATED += ["trainer.check_val_every_n_epoch=1", "trainer.max_epochs=3"]
IO = AtomicCheckpointIO()


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "csv" / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def _resume_and_compare(out: Path, uninterrupted: Path, compose_config) -> None:
    """Resume the run in ``out`` with ``ckpt_path=last``: the same weights and the same metrics.csv rows
    as the uninterrupted run (no row lost, none doubled)."""
    resumed = compose_config(*VALIDATED, "ckpt_path=last")
    resumed.paths.output_dir = str(out)
    run(resumed)
    _assert_equal(_weights(str(out)), _weights(str(uninterrupted)))
    assert _rows(out) == _rows(uninterrupted)


def _subprocess_run(out: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "reid.run",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={out}",
        *VALIDATED,
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_data_dir) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    result = _subprocess_run(out, tiny_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("nth", [1, 2])
def test_sigterm_as_a_validation_starts_keeps_the_step_and_resumes_exactly(
    nth, tmp_path, tiny_data_dir, uninterrupted, compose_config
):
    out = tmp_path / "run"
    killer = [
        "+callbacks.sigterm._target_=tests.training.callbacks.SigtermAtValidation",
        f"+callbacks.sigterm.nth={nth}",
    ]
    result = _subprocess_run(out, tiny_data_dir, *killer)
    assert result.returncode == SIGTERM_EXIT_STATUS, result.stderr[-3000:]
    steps = epoch_steps(compose_config(*VALIDATED), 3)
    done = sum(steps[:nth])  # the interrupted validation finished, then the run stopped at the epoch's end
    last = out / "checkpoints" / "last.ckpt"
    assert IO.load_checkpoint(last)["global_step"] == done
    assert f"holds step {done}" in result.stderr + result.stdout
    _resume_and_compare(out, uninterrupted, compose_config)


def test_sigterm_during_a_checkpoint_write_keeps_that_checkpoint_and_resumes_exactly(
    tmp_path, tiny_data_dir, uninterrupted, compose_config
):
    out = tmp_path / "run"
    killer = ["+callbacks.sigterm._target_=tests.training.callbacks.SigtermOnSave"]
    result = _subprocess_run(out, tiny_data_dir, *killer)
    assert result.returncode == SIGTERM_EXIT_STATUS, result.stderr[-3000:]
    done = epoch_steps(compose_config(*VALIDATED), 3)[0]  # the first save: after epoch 1's validation
    assert IO.load_checkpoint(out / "checkpoints" / "last.ckpt")["global_step"] == done
    assert f"holds step {done}" in result.stderr + result.stdout
    _resume_and_compare(out, uninterrupted, compose_config)


def test_sigterm_during_the_final_test_exits_143_without_results(tmp_path, tiny_data_dir):
    out = tmp_path / "run"
    killer = "+callbacks.sigterm._target_=tests.training.callbacks.SigtermAtTest"
    result = _subprocess_run(out, tiny_data_dir, "trainer.max_epochs=1", "test=true", killer)
    assert result.returncode == SIGTERM_EXIT_STATUS, result.stderr[-3000:]
    assert "during the final test" in result.stderr + result.stdout
    assert not (out / "results.json").exists()


def test_a_kill_right_after_an_epoch_checkpoint_loses_and_doubles_no_row(
    tmp_path, uninterrupted, compose_config
):
    out = tmp_path / "run"
    killed = compose_config(
        *VALIDATED,
        "+callbacks.kill._target_=tests.training.callbacks.KillAtEpochStart",
        "+callbacks.kill.epoch=1",
    )
    killed.paths.output_dir = str(out)
    with pytest.raises(SimulatedKillError):
        run(killed)
    _resume_and_compare(out, uninterrupted, compose_config)


def test_a_second_run_into_a_live_runs_folder_fails_naming_the_holder(tmp_path, caplog):
    folder = tmp_path / "run"
    first = RunFolderLock(folder)
    first.acquire()
    code = f"from reid.training.run_lock import RunFolderLock; RunFolderLock({str(folder)!r}).acquire()"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert child.returncode != 0 and f"in use by pid {os.getpid()}" in child.stderr
    first.release()
    assert not (folder / ".lock").exists()
    (folder / ".lock").write_text(f'{{"host": "{os.uname().nodename}", "pid": 999999999, "started": 0}}')
    with caplog.at_level("WARNING", logger="reid"):
        RunFolderLock(folder).acquire()  # pid 999999999 is gone: taken over
    assert "which is gone: taking it over" in caplog.text
    other_host = RunFolderLock(tmp_path / "other")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ".lock").write_text('{"host": "elsewhere", "pid": 1, "started": 0}')
    with pytest.raises(RunFolderBusyError, match="in use by pid 1 on elsewhere"):
        other_host.acquire()


def test_step_checkpoints_exist_before_the_first_validation_and_best_files_hold_their_scores(
    compose_config, tmp_path
):
    """With selection=best and a step checkpoint every 2 steps: last.ckpt at step 2 already (Lightning
    defers it to the first validation), and the best file holds the weights its score was computed on."""
    best = [
        *(o for o in VALIDATED if not o.startswith("callbacks.model_checkpoint.monitor")),
        "selection=best",
        "data.val_identities=2",
        "+callbacks.model_checkpoint.every_n_train_steps=2",
    ]
    kill = ["+callbacks.kill._target_=tests.training.callbacks.KillAfterSteps", "+callbacks.kill.steps=3"]
    cfg = compose_config(*best, *kill)
    cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(SimulatedKillError):
        run(cfg)
    assert IO.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 2
    full = compose_config(*best)
    full.paths.output_dir = str(tmp_path / "full")
    summary = run(full)
    best = IO.load_checkpoint(summary["tested_weights"]["checkpoint"])
    state = next(v for k, v in best["callbacks"].items() if k.startswith("LastStateCheckpoint"))
    ends = [sum(epoch_steps(full, 3)[: i + 1]) for i in range(3)]
    assert best["global_step"] in ends  # the weights of a validation, never of a later step checkpoint
    assert state["best_model_score"] is not None


def test_a_kill_in_the_validation_after_a_step_checkpoint_runs_it_again_on_resume(
    compose_config, tmp_path, uninterrupted
):
    """A step checkpoint on an epoch's last batch is followed by a validation; a kill during it resumes
    before it (Lightning would resume from the step checkpoint past the validation and skip it, and so
    choose another best): the resumed run validates, selects and tests as the uninterrupted one."""
    best = [
        *(o for o in VALIDATED if not o.startswith("callbacks.model_checkpoint.monitor")),
        "selection=best",
        "data.val_identities=2",
        "+callbacks.model_checkpoint.every_n_train_steps=1",
        "test=true",
    ]
    steps = epoch_steps(compose_config(*best), 3)
    full = compose_config(*best)
    full.paths.output_dir = str(tmp_path / "full")
    expected = run(full)
    killed = compose_config(
        *best, "+callbacks.kill._target_=tests.training.callbacks.KillInValidation", "+callbacks.kill.nth=2"
    )
    killed.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(SimulatedKillError):
        run(killed)
    last = IO.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == sum(steps[:2]) - 1  # the step before the one a validation follows
    resumed = compose_config(*best, "ckpt_path=last")
    resumed.paths.output_dir = str(tmp_path / "run")
    summary = run(resumed)
    assert _rows(tmp_path / "run") == _rows(tmp_path / "full")
    assert (
        IO.load_checkpoint(summary["tested_weights"]["checkpoint"])["global_step"]
        == (IO.load_checkpoint(expected["tested_weights"]["checkpoint"])["global_step"])
    )
    assert summary["test"] == expected["test"]


def test_a_second_hydra_run_into_a_held_folder_writes_nothing_there(tmp_path, tiny_data_dir):
    """Before, the second run's .hydra/overrides.yaml replaced the first's: the lock is now taken as Hydra
    starts (conf/hydra/default.yaml callbacks), before it writes the folder."""
    folder = tmp_path / "run"
    held = RunFolderLock(folder)
    held.acquire()
    result = _subprocess_run(folder, tiny_data_dir)
    held.release()
    assert result.returncode != 0
    assert f"is in use by pid {os.getpid()}" in result.stderr, result.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == []  # no .hydra/, no log, and the lock released
