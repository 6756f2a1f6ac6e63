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


# a one-step fit and a test-only evaluation on a tree with other identities (~5 s)
def test_test_only_evaluation_on_another_dataset_needs_no_classifier(compose_config, capsys, caplog):
    """Issue 15 items 7 and 9: `train=false ckpt_path=... data=<other dataset>` ranks with the neck features
    (the classifier of 8 identities is left out for one of 5), and the table says what it rests on."""
    from reid.config_checks import warn_on_changed_settings
    from reid.training.checkpoint_io import AtomicCheckpointIO

    one_step = ["trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=0"]
    first = compose_config(*TINY_RUN, *one_step, "test=false")
    run(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    other = ["data.dataset.root=${paths.data_dir}/synthetic_other", "data.dataset.num_train_ids=5"]
    capsys.readouterr()
    summary = run(compose_config(*TINY_RUN, *other, "train=false", f"ckpt_path={last}"))
    printed = capsys.readouterr().out
    assert summary["test_label"] == "checkpoint" and "trained" not in printed.split("valid / all queries")[-1]
    valid, total = summary["test"]["num_valid_queries"], summary["test"]["num_queries"]
    assert 0 < valid <= total and f"{valid:.0f} / {total:.0f}" in printed
    written = json.loads((Path(first.paths.output_dir) / "results.json").read_text())
    assert written["test"]["num_valid_queries"] == valid and written["test_label"] == "checkpoint"

    checkpoint = AtomicCheckpointIO().load_checkpoint(last)  # resuming with other settings warns
    changed = compose_config(*TINY_RUN, "trainer.max_epochs=3", "data.batch_size=4", "seed=7")
    with caplog.at_level("WARNING", logger="reid"):
        differences = warn_on_changed_settings(checkpoint, changed, str(last))
    assert differences == ["seed: 0 -> 7", "data.batch_size: 8 -> 4", "trainer.max_epochs: 1 -> 3"]
    assert all(d in caplog.text for d in differences) and str(last) in caplog.text
    assert warn_on_changed_settings(checkpoint, compose_config(*TINY_RUN, "trainer.max_epochs=1"), "x") == []


@pytest.mark.parametrize("override", ["train=false", "+trainer.limit_train_batches=0"])
def test_a_model_that_took_no_step_is_not_labelled_trained(compose_config, capsys, override):
    summary = run(compose_config(*TINY_RUN, "trainer.max_epochs=1", override))
    assert summary["test_label"] == "random init"
    table = capsys.readouterr().out.split("valid / all queries")[-1]
    assert "random init" in table and "trained" not in table


def test_lightning_noise_is_silenced():
    """The LitLogger tip (logged at every Trainer start) and torch's LeafSpec deprecation (warned from
    Lightning's pytree helper) do not reach the user; each fires without :func:`quiet_lightning`."""
    import logging
    import warnings

    import lightning as L
    from lightning.pytorch.utilities._pytree import _tree_flatten

    from reid.run import _not_a_tip, quiet_lightning

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    rank_zero.addHandler(handler)
    rank_zero.setLevel(logging.INFO)
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    try:
        rank_zero.removeFilter(_not_a_tip)
        L.Trainer(**quiet, enable_model_summary=False)
        assert any("litlogger" in str(r.msg) for r in records)
        records.clear()
        quiet_lightning()
        L.Trainer(**quiet, enable_model_summary=False)
        assert not any("litlogger" in str(r.msg) for r in records)
    finally:
        rank_zero.removeHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _tree_flatten(1)
    assert any("LeafSpec" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        quiet_lightning()
        _tree_flatten(1)
    assert not any("LeafSpec" in str(w.message) for w in caught)


def test_model_summary_counts_flops(compose_config):
    """Lightning's summary printed a FLOPs column of zeros (no example input); the supervised task gets an
    example batch of ``data.image_size``, so the column counts a real forward pass."""
    from hydra.utils import instantiate
    from lightning.pytorch.utilities.model_summary import ModelSummary

    from reid.run import _summary_input

    cfg = compose_config(*TINY_RUN, "trainer.enable_model_summary=true")
    datamodule = instantiate(cfg.data)
    model = instantiate(
        cfg.model, data_info=datamodule.info, evaluation=instantiate(cfg.eval), _recursive_=False
    )
    assert ModelSummary(model).total_flops == 0
    _summary_input(model, cfg)
    assert tuple(model.example_input_array.shape) == (1, 3, 64, 32)
    assert ModelSummary(model).total_flops > 1e6
