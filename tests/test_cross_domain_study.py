"""benchmarks/cross_domain_study.py without training: its table on fabricated run folders (both
results.json layouts), its job list, and its variants' overrides composed as ``python -m reid.run`` would."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from reid.config import CONFIG_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cross_domain_study as study


def _write(out: Path, variant: str, seed: int, test: dict) -> None:
    folder = study.run_dir(out, variant, seed)
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"test": test}))


def test_report_has_one_row_per_run_and_the_means(tmp_path):
    out, doc = tmp_path / "runs", tmp_path / "cross_domain.md"
    for seed in (0, 1):  # two targets: {target: metrics}
        for offset, variant in enumerate(("bot", "ibn", "snr")):
            b = {"mAP": 10.0 + offset + seed, "R1": 20.0 + seed, "mINP": 3.0}
            a = {"mAP": 50.0 + seed, "R1": 60.0, "mINP": 9.0}
            _write(out, variant, seed, {"synthetic_duke": b, "synthetic": a})
        _write(out, "oracle", seed, {"mAP": 70.0 + seed, "R1": 80.0, "mINP": 30.0})  # one target: flat
    body = study.report(out, [0, 1], ["--epochs", "3"], doc)
    text = doc.read_text()
    assert "<!-- cross_domain_study:start -->" in text and body.strip() in text
    assert "python benchmarks/cross_domain_study.py --epochs 3" in text
    rows = [line for line in body.splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(rows) == 4 * 2 + 4  # a row per run and a mean per variant
    assert "| **BoT + SNR + causality** | mean | 12.50 | 20.50 | 3.00 | 50.50 | 60.00 |" in rows
    assert "| BoT + IBN-a | 1 | 12.00 | 21.00 | 3.00 | 51.00 | 60.00 |" in rows
    assert "| **BoT trained on B (in-domain)** | mean | 70.50 | 80.00 | 30.00 | - | - |" in rows


def test_report_without_runs_stops_with_the_expected_layout(tmp_path):
    with pytest.raises(SystemExit, match="seed<k>/results.json"):
        study.report(tmp_path / "nothing", [0], [], tmp_path / "doc.md")


def test_jobs_cover_every_variant_and_seed_with_the_same_budget(tmp_path):
    jobs = study.jobs(["bot", "snr"], [0, 1], 5, tmp_path)
    assert [(job.variant, job.seed) for job in jobs] == [("bot", 0), ("bot", 1), ("snr", 0), ("snr", 1)]
    for job in jobs:
        assert "trainer.max_epochs=5" in job.overrides and f"seed={job.seed}" in job.overrides
        assert job.command()[-1] == f"hydra.run.dir={tmp_path / job.variant / f'seed{job.seed}'}"


@pytest.mark.parametrize("variant", study.VARIANTS, ids=lambda v: v.name)
def test_variant_overrides_compose(variant):
    overrides = [*variant.overrides, *study.common_overrides(seed=1, epochs=3)]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=overrides)
    assert (cfg.seed, cfg.trainer.max_epochs, cfg.data.num_workers) == (1, 3, 0)
    assert cfg.callbacks.model_checkpoint.monitor is None  # the last epoch is tested
    assert cfg.data.dataset._target_ == (
        "reid.data.synthetic.load_synthetic_duke"
        if variant.name == "oracle"
        else "reid.data.synthetic.load_synthetic"
    )
    backbone = cfg.model.backbone
    resnet = backbone.resnet._target_ if variant.name == "snr" else backbone._target_
    expected = (
        "reid.models.resnet.resnet_tiny_ibn_a" if variant.name == "ibn" else "reid.models.resnet.resnet_tiny"
    )
    assert resnet == expected
    assert ("causality" in cfg.model.loss) == (variant.name == "snr")
    assert cfg.model.loss.center is not None  # the BoT recipe with center loss, for every variant
