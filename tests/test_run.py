"""End to end through `reid.run`: compose, fit, test, results.json; bad config fails early."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reid.config_checks import ConfigValueError
from reid.run import check_output_dir, check_renamed_groups, resolve_ckpt_path, run
from reid.tasks.from_config import build_task
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
    assert Path(summary["tested_weights"]["checkpoint"]).is_file()
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


def test_a_bad_value_ends_the_run_in_one_line_and_with_debug_in_a_traceback(tmp_path):
    """reid.tools.cli.bad_input_exits: exit status 2 and one line naming the key; --debug re-raises."""
    command = [sys.executable, "-m", "reid.run", "data.batch_size=-1", f"hydra.run.dir={tmp_path}"]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    errors = [line for line in plain.stderr.splitlines() if "error:" in line]
    expected = "data.batch_size=-1: expected a positive integer (images per step) (traceback: add --debug)"
    assert errors == [f"python -m reid.run: error: {expected}"], plain.stderr
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ValueError" in debug.stderr


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

    one_step = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=0"]
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


@pytest.mark.parametrize("override", ["train=false", "trainer.limit_train_batches=0"])
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
    model = build_task(cfg.model, datamodule.info, instantiate(cfg.eval))
    assert ModelSummary(model).total_flops == 0
    _summary_input(model, cfg)
    assert tuple(model.example_input_array.shape) == (1, 3, 64, 32)
    assert ModelSummary(model).total_flops > 1e6


# ---- several evaluation targets in one run (issue 16 item 4) -------------------------------------------
TWO_TARGETS = "data.test_datasets=[synthetic_tiny,synthetic_duke_tiny]"  # domain A, then domain B
METRIC_KEYS = {"mAP", "R1", "R5", "R10", "mINP", "num_valid_queries", "num_queries"}


def test_two_targets_log_per_target_metrics_and_results_hold_one_entry_each(compose_config, capsys):
    """One fit, evaluated on the synthetic Market and Duke trees: results.json "test" holds one entry per
    target in order, metrics.csv has val/<target>/* for each and val/mAP equals the first target's."""
    cfg = compose_config(*TINY_RUN, "trainer.max_epochs=1", TWO_TARGETS)
    capsys.readouterr()
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    written = json.loads((out / "results.json").read_text())
    assert (
        list(written["test"]) == ["synthetic_tiny", "synthetic_duke_tiny"]
        and written["test"] == summary["test"]
    )
    for target in written["test"].values():
        assert set(target) == METRIC_KEYS and 0.0 < target["mAP"] <= 100.0
    assert written["test"]["synthetic_tiny"] != written["test"]["synthetic_duke_tiny"]
    table = capsys.readouterr().out.split("valid / all queries")[-1]
    assert "trained synthetic_tiny" in table and "trained synthetic_duke_tiny" in table
    lines = (out / "csv" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert {f"val/{t}/{k}" for t in ("synthetic_tiny", "synthetic_duke_tiny") for k in METRIC_KEYS} <= set(
        header
    )
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    val = [row for row in rows if row.get("val/mAP")]
    assert val and all(row["val/mAP"] == row["val/synthetic_tiny/mAP"] for row in val)
    test = next(row for row in rows if row.get("test/mAP"))
    assert float(test["test/mAP"]) == pytest.approx(written["test"]["synthetic_tiny"]["mAP"])


def test_each_target_of_a_run_scores_as_in_a_run_of_its_own(compose_config):
    """Evaluation only (train=false, the same seeded initialisation: every run has 8 cameras, as domain B):
    per-target metrics of [B, A] equal those of [B] alone and of [A] alone (mapping form, Hydra-composed)."""
    both = run(
        compose_config(*TINY_RUN, "train=false", "data.test_datasets=[synthetic_duke_tiny,synthetic_tiny]")
    )
    assert list(both["test"]) == ["synthetic_duke_tiny", "synthetic_tiny"]
    duke = run(
        compose_config(*TINY_RUN, "train=false", "data.test_datasets=[synthetic_duke_tiny]", "overwrite=true")
    )
    market = run(
        compose_config(
            *TINY_RUN, "train=false", "+data/dataset@data.test_datasets.a=synthetic_tiny", "overwrite=true"
        )
    )
    assert set(duke["test"]) == set(market["test"]) == METRIC_KEYS  # one target: the flat layout
    assert both["test"]["synthetic_duke_tiny"] == pytest.approx(duke["test"], abs=1e-6)
    assert both["test"]["synthetic_tiny"] == pytest.approx(market["test"], abs=1e-6)


def test_test_dataset_names_resolve_with_the_run_paths(compose_config, tiny_data_dir):
    from reid.dataset_options import resolve_test_datasets

    cfg = compose_config(*TINY_RUN, "data.test_datasets=[synthetic_duke_tiny,dukemtmc]")
    resolve_test_datasets(cfg)
    assert list(cfg.data.test_datasets) == ["synthetic_duke_tiny", "dukemtmc"]
    assert cfg.data.test_datasets.synthetic_duke_tiny.num_cameras == 8  # its defaults list applied
    assert cfg.data.test_datasets.dukemtmc.root == f"{tiny_data_dir}/DukeMTMC-reID"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.test_datasets=[dukemtc]",
            "'dukemtc' is not a dataset option; expected one of cuhk03_np, dukemtmc, folder",
        ),
        ("data.test_datasets=[dukemtmc,dukemtmc]", "'dukemtmc' is listed twice"),
        ("data.test_datasets=dukemtmc", "expected a non-empty list of dataset names"),
    ],
)
def test_bad_test_datasets_fail_before_anything_is_built(compose_config, override, message):
    from reid.config_checks import ConfigValueError

    with pytest.raises(ConfigValueError, match=re.escape(message)):
        run(compose_config(*TINY_RUN, override))


def test_the_replaced_test_dataset_key_fails_at_compose_time(compose_config):
    """The datamodule's schema (reid.config_store) has no `test_dataset` (replaced by `test_datasets`)."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=r"Key 'test_dataset' not in 'ReIDDataModule'"):
        compose_config(*TINY_RUN, "+data/dataset@data.test_dataset=dukemtmc")


def test_summarize_reads_both_results_layouts(tmp_path):
    """reid.tools.summarize: a one-target run's flat "test" gives test/<metric>, a run of several targets
    test/<target>/<metric>."""
    from reid.tools.summarize import collect, table_rows

    layouts = {"0": {"mAP": 50.0}, "1": {"duke": {"mAP": 20.0, "R1": 30.0}, "msmt": {"mAP": 10.0}}}
    for job, test in layouts.items():
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- seed={job}\n")
        (tmp_path / job / "results.json").write_text(json.dumps({"test": test}))
    runs = collect(tmp_path)
    assert runs[0].metrics == {"test/mAP": 50.0}
    assert runs[1].metrics == {"test/duke/mAP": 20.0, "test/duke/R1": 30.0, "test/msmt/mAP": 10.0}
    header, _ = table_rows(runs)
    assert header[2:-1] == ["test/mAP", "test/duke/mAP", "test/duke/R1", "test/msmt/mAP"]


def test_two_targets_under_two_process_ddp_score_as_in_one_process(tmp_path, tiny_data_dir):
    """DDP on gloo: each target's loader is sharded (DistributedSampler pads it to equal shards) and its
    evaluator gathers and drops the padded duplicates by index, so every target's metrics equal those of
    one process (evaluation only: the seeded initialisation is the same in both runs)."""
    common = [
        "data=synthetic_tiny", "trainer=cpu", "callbacks.progress_bar=null", "+model.backbone.depth=1",
        "+model.backbone.embed_dim=32", "+model.backbone.num_heads=2", "train=false", TWO_TARGETS,
        f"paths.data_dir={tiny_data_dir}",
    ]  # fmt: skip
    ddp = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.sync_batchnorm=false",
    ]
    results = {}
    for name, extra in (("single", []), ("ddp", ddp)):
        command = [sys.executable, "-m", "reid.run", *common, *extra, f"hydra.run.dir={tmp_path / name}"]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent
        )
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = json.loads((tmp_path / name / "results.json").read_text())["test"]
    assert list(results["ddp"]) == ["synthetic_tiny", "synthetic_duke_tiny"]
    for target, single in results["single"].items():
        assert results["ddp"][target] == pytest.approx(single, abs=1e-4), target


@pytest.mark.parametrize(
    ("override", "fixed"),
    [
        ("dataset@data.dataset=cuhk03_np", "data/dataset=cuhk03_np"),
        ("+dataset@data.monitor_dataset=market1501", "+data/dataset@data.monitor_dataset=market1501"),
    ],
)
def test_an_override_of_the_moved_dataset_group_says_what_to_write(override, fixed):
    """The loaders moved under the data group (``data/dataset``, issue 32): the old override fails in one
    line giving the new one; an override of ``data.dataset``'s keys is no group override and passes."""
    moved = f"the 'dataset' group is now 'data/dataset'.*write {re.escape(fixed)}$"
    with pytest.raises(ConfigValueError, match=moved):
        check_renamed_groups([override])
    check_renamed_groups(["data/dataset=cuhk03_np", "data.dataset.boxes=labeled", "data=market1501"])
