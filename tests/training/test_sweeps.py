"""Sweep plumbing: plugin configs, the summary table, and a local Hydra multirun on the tiny model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reid.config import CONFIG_DIR
from reid.tools.summarize import collect, main, table_rows, terminal_rows

OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (CONFIG_DIR / "hydra" / "sweeper").glob("optuna_*.yaml"))
)
def test_optuna_configs_are_well_formed(name):
    text = (CONFIG_DIR / "hydra" / "sweeper" / name).read_text()
    assert text.startswith("# @package hydra.sweeper")
    cfg = yaml.safe_load(text)
    assert cfg["_target_"] == OPTUNA and cfg["sampler"]["_target_"] == "optuna.samplers.TPESampler"
    assert cfg["direction"] == "maximize" and cfg["n_trials"] > 0 and cfg["params"]
    for key in cfg["params"]:
        assert key.split(".")[0] in {"model", "data", "trainer"}, key


def test_submitit_config_is_well_formed():
    text = (CONFIG_DIR / "hydra" / "launcher" / "submitit_slurm.yaml").read_text()
    assert text.startswith("# @package hydra.launcher")
    cfg = yaml.safe_load(text)
    assert cfg["_target_"] == SUBMITIT
    assert cfg["tasks_per_node"] == cfg["gpus_per_node"]  # Lightning: one process per GPU
    assert cfg["signal_delay_s"] > 0 and cfg["max_num_timeout"] > 0  # requeue + resume from last.ckpt


def _fake_job(root: Path, num: int, overrides: list[str], test: dict | None, val_rows: list[dict]) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if test is not None:
        (job / "results.json").write_text(json.dumps({"test": test}))
    if val_rows:
        (job / "csv").mkdir()
        with (job / "csv" / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["epoch", "train/loss", "val/mAP", "val/R1"])
            writer.writeheader()
            writer.writerows(val_rows)


def test_summary_table_lists_varying_overrides_and_last_metrics(tmp_path, capsys):
    common = "trainer.max_epochs=1"
    _fake_job(
        tmp_path,
        0,
        [common, "model.jpm.shift=1"],
        {"mAP": 10.0, "R1": 20.0},
        [
            {"epoch": 0, "train/loss": 3, "val/mAP": 5.0, "val/R1": ""},
            {"epoch": 1, "val/mAP": 7.5, "val/R1": 9},
        ],
    )
    _fake_job(tmp_path, 1, [common, "model.jpm.shift=2"], {"mAP": 12.5, "R1": 25.0}, [])
    _fake_job(tmp_path, 10, [common, "model.jpm.shift=3"], None, [])  # a crashed job
    header, rows = table_rows(collect(tmp_path))
    assert header == ["job", "model.jpm.shift", "val/mAP", "val/R1", "test/mAP", "test/R1", "status"]
    assert rows == [
        ["0", "1", "7.50", "9.00", "10.00", "20.00", "ok"],
        ["1", "2", "", "", "12.50", "25.00", "ok"],
        ["10", "3", "", "", "", "", "no results"],
    ]
    assert "trainer.max_epochs" in table_rows(collect(tmp_path), all_overrides=True)[0]
    main([str(tmp_path), "--csv", str(tmp_path / "sweep.csv")])
    assert "shift=1" in capsys.readouterr().out
    assert list(csv.reader((tmp_path / "sweep.csv").open()))[1] == rows[0]


def test_the_terminal_table_is_readable_at_80_columns_with_targets_as_rows(tmp_path, capsys, monkeypatch):
    """Before, at 80 columns every header was cut to "...", and at 250 the per-target headers to
    `test/synth...`, so two targets could not be told apart."""
    key = "model.loss.rpe_triplet"
    targets = {
        "synthetic": {"mAP": 40.0, "R1": 50.0, "R5": 70.0, "R10": 80.0, "mINP": 10.0},
        "synthetic_duke": {"mAP": 20.0, "R1": 25.0, "R5": 40.0, "R10": 50.0, "mINP": 5.0},
    }
    for num, form in enumerate(("naive", "soft")):
        overrides = [f"{key}.form={form}", f"{key}.weight=0.5", "model.optimizer.lr=0.05", f"seed={num}"]
        _fake_job(tmp_path, num, overrides, targets, [{"epoch": 0, "val/mAP": 30.0 + num, "val/R1": 1}])
    monkeypatch.setenv("COLUMNS", "80")
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "…" not in out and "..." not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    for header in ("job", "overrides", "target", "mAP", "R1", "mINP", "val mAP", "status"):
        assert header in out
    assert out.count("synthetic_duke") == 2 and "form=soft" in out.replace("\n", "")
    header, rows = terminal_rows(collect(tmp_path))
    assert [row[2] for row in rows] == ["synthetic", "synthetic_duke"] * 2
    assert rows[1][3:6] == ["20.00", "25.00", "5.00"] and rows[0][1] == "form=naive seed=0"


def test_summary_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no runs"):
        collect(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect(tmp_path / "nope")


def test_local_multirun_then_summarize(tmp_path, tiny_data_dir):
    sweep = tmp_path / "multirun"
    command = [
        sys.executable,
        "-m",
        "reid.run",
        "-m",
        "data=synthetic_tiny",
        "model=transreid_tiny",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "callbacks.progress_bar=null",
        "+model.backbone.depth=1",
        "+model.backbone.embed_dim=32",
        "+model.backbone.num_heads=2",
        "evaluate_before_fit=false",
        f"paths.data_dir={tiny_data_dir}",
        f"hydra.sweep.dir={sweep}",
        "model.jpm.shift=1,2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=Path(CONFIG_DIR).parent)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = collect(sweep)
    assert [r.overrides["model.jpm.shift"] for r in runs] == ["1", "2"]
    header, rows = table_rows(runs)
    assert header[:2] == ["job", "model.jpm.shift"] and {"val/mAP", "test/mAP"} <= set(header)
    assert all(row[-1] == "ok" for row in rows)
