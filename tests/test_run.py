"""End to end through `reid.run`: compose, fit, test, results.json; bad config fails early."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reid.run import check_output_dir, resolve_ckpt_path, run
from tests.conftest import TINY_RUN


def test_tiny_run_fits_tests_and_writes_results(compose_config):
    cfg = compose_config(*TINY_RUN, "evaluate_before_fit=true")
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    written = json.loads((out / "results.json").read_text())
    assert written["test"] == summary["test"]
    assert set(summary["test"]) >= {"mAP", "R1", "R5", "R10", "mINP"}
    assert 0.0 < summary["test"]["mAP"] <= 100.0
    assert set(summary["untrained"]) >= {"mAP", "R1"}
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert Path(summary["best_checkpoint"]).is_file()
    metrics = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss_id", "train/loss_tri", "val/mAP", "val/R1", "val/mINP"} <= set(metrics)


def test_resolve_ckpt_path(tmp_path):
    assert resolve_ckpt_path(None, tmp_path) is None
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        resolve_ckpt_path("last", tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert resolve_ckpt_path("last", tmp_path).endswith("checkpoints/last.ckpt")


def test_config_typo_fails_at_start_naming_the_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "reid.run", "data.batch_sise=8", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "batch_sise" in result.stderr


def test_unknown_group_option_lists_the_choices(compose_config):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="markt"):
        compose_config("data=markt")


# two tiny training runs (~20 s): kept in the fast suite, it proves resume appends and reruns refuse
def test_resume_appends_to_the_log_and_a_rerun_refuses(compose_config):
    """Issue 15 item 4: `hydra.run.dir=<run folder> ckpt_path=last` keeps the rows of csv/metrics.csv
    (Lightning's CSVLogger truncated them), and a new run into the folder refuses to overwrite its results."""
    first = compose_config(*TINY_RUN, "trainer.max_epochs=1", "test=false")
    run(first)
    out = Path(first.paths.output_dir)
    before = (out / "csv" / "metrics.csv").read_text().splitlines()
    with pytest.raises(FileExistsError, match="ckpt_path=last"):
        run(compose_config(*TINY_RUN, "trainer.max_epochs=1", "test=false"))
    assert (out / "csv" / "metrics.csv").read_text().splitlines() == before
    run(compose_config(*TINY_RUN, "trainer.max_epochs=2", "test=false", "ckpt_path=last"))
    after = (out / "csv" / "metrics.csv").read_text().splitlines()
    assert after[0] == before[0] and after[: len(before)] == before and len(after) > len(before)
    epochs = {line.split(",")[before[0].split(",").index("epoch")] for line in after[1:]}
    assert {"0", "1"} <= epochs


def test_overwrite_removes_the_previous_results(tmp_path):
    for name in ("results.json", "csv/metrics.csv", "checkpoints/last.ckpt", "checkpoints/epoch=0.ckpt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("old")
    (tmp_path / ".hydra").mkdir()
    check_output_dir(tmp_path, ckpt_path=None, overwrite=True)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        ".hydra", "checkpoints", "csv"
    ]  # fmt: skip
    check_output_dir(tmp_path, ckpt_path=None, overwrite=False)  # nothing left to protect
