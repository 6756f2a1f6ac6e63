"""benchmarks/usl_study.py without training: its table on fabricated run folders, its job list (each run
starts from its cross-domain source's checkpoint), the sources it still needs, and its variants'
overrides composed as ``python -m reid.run`` would."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from reid.config import CONFIG_DIR
from tests.conftest import TINY_MARKET

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import study_runs
import usl_study as study


def _write(out: Path, variant: str, seed: int, untrained: dict, test: dict, clusters: int) -> None:
    folder = study.run_dir(out, variant, seed)
    (folder / "csv").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"untrained": untrained, "test": test}))
    rows = ["epoch,step,train/loss,train/num_clusters,train/num_outliers"]
    rows += ["0,44,2.5,,", f"1,45,,{clusters + 5},30", f"1,89,,{clusters},{20 + seed}"]
    (folder / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_report_has_start_end_gain_and_the_last_clustering_per_run(tmp_path):
    out, doc = tmp_path / "runs", tmp_path / "usl.md"
    for seed in (0, 1):
        b0 = {"mAP": 8.0 + seed, "R1": 15.0, "mINP": 2.0}
        b1 = {"mAP": 12.0 + 2 * seed, "R1": 20.0, "mINP": 3.0}
        a = {"mAP": 50.0, "R1": 60.0, "mINP": 9.0}
        _write(
            out,
            "uda_snr",
            seed,
            {"synthetic_duke": b0, "synthetic": a},
            {"synthetic_duke": b1, "synthetic": a},
            30,
        )
        _write(out, "usl_b2a", seed, {"synthetic": b0, "synthetic_duke": a}, {"synthetic": b1}, 40)
    body = study.report(out, [0, 1], ["--epochs", "3"], doc)
    text = doc.read_text()
    assert "<!-- usl_study:start -->" in text and body.strip() in text
    assert "python benchmarks/usl_study.py --epochs 3" in text
    rows = [line for line in body.splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(rows) == 2 * 2 + 2  # a row per run and a mean per variant
    cells = "| 15.00 | 20.00 | 2.00 | 3.00 |"  # start / end R1, start / end mINP
    assert (
        f"| UDA A->B from BoT + SNR (synthetic_duke) | 1 | 9.00 | 14.00 | +5.00 {cells} 30 | 21 | - |" in rows
    )
    assert (
        f"| **USL on A from the model trained on B** | mean | 8.50 | 13.00 | +4.50 {cells} 40 | 20 | - |"
        in rows
    )


def test_report_without_runs_stops_with_the_expected_layout(tmp_path):
    with pytest.raises(SystemExit, match="seed<k>/results.json"):
        study.report(tmp_path / "nothing", [0], [], tmp_path / "doc.md")


def test_jobs_start_from_their_sources_checkpoint_with_the_same_budget(tmp_path):
    sources = tmp_path / "sources"
    jobs = study.jobs(["uda_bot", "usl_b2a"], [0, 1], 5, tmp_path / "out", sources)
    assert [(job.variant, job.seed) for job in jobs] == [
        ("uda_bot", 0),
        ("uda_bot", 1),
        ("usl_b2a", 0),
        ("usl_b2a", 1),
    ]
    for job in jobs:
        source = "bot" if job.variant == "uda_bot" else "oracle"
        weights = sources.resolve() / source / f"seed{job.seed}" / "checkpoints" / "last.ckpt"
        assert f"model.weights={weights}" in job.overrides
        assert {"trainer.max_epochs=5", f"seed={job.seed}", "evaluate_before_fit=true"} <= set(job.overrides)


def test_missing_sources_are_the_cross_domain_runs_without_a_checkpoint(tmp_path):
    (tmp_path / "snr" / "seed0" / "checkpoints").mkdir(parents=True)
    (tmp_path / "snr" / "seed0" / "checkpoints" / "last.ckpt").write_bytes(b"")
    missing = study.missing_sources(["uda_snr", "usl_b2a"], [0, 1], 4, tmp_path)
    assert sorted((job.variant, job.seed) for job in missing) == [("oracle", 0), ("oracle", 1), ("snr", 1)]
    assert all("trainer.max_epochs=4" in job.overrides for job in missing)


@pytest.mark.parametrize("variant", study.VARIANTS, ids=lambda v: v.name)
def test_variant_overrides_compose(variant, tmp_path):
    (job,) = study.jobs([variant.name], [1], 3, tmp_path / "out", tmp_path / "sources")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=list(job.overrides))
    assert (cfg.seed, cfg.trainer.max_epochs, cfg.data.num_workers) == (1, 3, 0)
    assert cfg.evaluate_before_fit and cfg.callbacks.model_checkpoint.monitor is None  # last epoch tested
    assert cfg.model._target_ == "reid.tasks.cluster_contrast.ClusterContrastTask"
    assert cfg.model.clustering.camera_centering is not variant.name.endswith("_plain")
    infomap = "_infomap" in variant.name
    assert cfg.model.clustering._target_ == (
        "reid.clustering.KnnInfomap" if infomap else "reid.clustering.JaccardDBSCAN"
    )
    assert cfg.data.test_datasets[0] == variant.target  # the target is scored first
    clustered = "load_synthetic_duke" if variant.target == "synthetic_duke" else "load_synthetic"
    assert cfg.data.dataset._target_ == f"reid.data.synthetic.{clustered}"


def test_pseudo_label_agreement_reads_the_last_clustering_against_the_hidden_identities(tmp_path):
    """The run's checkpoint labels vs the identities of its (tiny synthetic) training split, in dataset
    order, outliers left out: the true labels give 1, a permutation of them too, a camera split less."""

    data = tmp_path / "data"
    GlobalHydra.instance().clear()
    overrides = ["experiment=usl_demo", *(f"data.dataset.{k}={v}" for k, v in TINY_MARKET.items())]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[f"paths.data_dir={data}", *overrides])
    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    records = instantiate(cfg.data.dataset)().train
    pids = torch.tensor([r.pid for r in records])

    def agreement(labels: torch.Tensor) -> float:
        torch.save({study.STATE_KEY: {"pseudo_labels": labels}}, folder / "checkpoints" / "last.ckpt")
        return study.pseudo_label_agreement(folder, data)

    assert agreement(pids) == pytest.approx(1.0)
    assert agreement((pids * 7 + 3) % 101) == pytest.approx(1.0)  # cluster numbering does not matter
    outliers = pids.clone()
    outliers[::5] = -1
    assert agreement(outliers) == pytest.approx(1.0)  # outliers are left out
    cameras = torch.tensor([r.camid for r in records])
    assert agreement(cameras) < 0.2


def test_the_reported_command_is_the_one_that_makes_the_whole_table():
    argv = [
        "--seeds",
        "0",
        "1",
        "--variants",
        "uda_bot",
        "usl_b2a",
        "--jobs",
        "2",
        "--report-only",
        "--rerun",
    ]
    assert study_runs.reproducing_argv(argv) == ["--seeds", "0", "1", "--jobs", "2"]
    assert study_runs.reproducing_argv(["--variants", "uda_bot"]) == []
