"""End to end through `reid.run`: compose, fit, test, results.json; bad config fails early."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reid.run import resolve_ckpt_path, run
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
