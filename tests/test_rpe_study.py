"""benchmarks/rpe_study.py without training: its reading, divergence rule, figure and table on fabricated
run folders, and its five variants' overrides composed as ``python -m reid.run`` would: every triplet form at
one weight and no ramp, one optimiser and schedule for all (the fair comparison)."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from PIL import Image

from reid.config import CONFIG_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import rpe_study

RPE = rpe_study.RPE
STEPS = 30


def _write_run(
    folder: Path, variant: str, seed: int, nan_at: int | None = None, blow_up_at: int | None = None
):
    """A Lightning-style metrics.csv (an lr-monitor row before each train row) and a results.json."""
    columns = ["epoch", "lr-AdamW/lr", "step", "train/loss", "train/loss_id"]
    if variant in rpe_study.FORMS:
        stats = ("d_ap", "d_an", "gap", "relation_norm", "pos_embed_norm", "rel_bias_norm", "weight", "auc")
        columns += ["train/loss_rpe_triplet", *(f"{RPE}/{k}" for k in stats)]
    (folder / "csv").mkdir(parents=True)
    with (folder / "csv" / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for step in range(STEPS):
            writer.writerow({"step": step, "lr-AdamW/lr": 1e-3})
            loss = math.nan if nan_at is not None and step >= nan_at else 5.0 - step / STEPS + seed * 0.1
            row = {"epoch": step // 10, "step": step, "train/loss": loss, "train/loss_id": loss - 1}
            if variant in rpe_study.FORMS:
                grown = 100.0 if blow_up_at is not None and step >= blow_up_at else 1.0
                # the relation norm grows 50x in every run (the bias entering): not a divergence
                row |= {
                    "train/loss_rpe_triplet": 0.69,
                    f"{RPE}/relation_norm": 0.03 * (50.0 if step else 1.0),
                }
                row |= {f"{RPE}/{k}": 0.05 for k in ("d_ap", "rel_bias_norm", "weight")}
                row |= {f"{RPE}/d_an": 0.05 * grown}
                row |= {f"{RPE}/gap": -0.01, f"{RPE}/pos_embed_norm": 0.28, f"{RPE}/auc": 0.6}
            writer.writerow(row)
    test = {"mAP": 40.0 + seed, "R1": 50.0 + seed, "mINP": 10.0 + seed, "R5": 70.0}
    if variant in rpe_study.FORMS:
        test |= {"rpe/auc": 0.7 + seed / 10, "rpe/collapse": 0.0, "rpe/raw_collapse": 0.5}
    (folder / "results.json").write_text(json.dumps({"test": test}))


@pytest.fixture
def study(tmp_path: Path) -> Path:
    out = tmp_path / "runs"
    for variant in ("baseline", "bias", *rpe_study.FORMS):
        for seed in (0, 1):
            blow_up = {0: 7, 1: None}[seed] if variant == "naive" else None
            nan_at = 12 if variant == "naive" and seed == 1 else None
            _write_run(rpe_study.run_dir(out, variant, seed), variant, seed, nan_at, blow_up)
    return out


def test_report_writes_the_figure_the_table_and_the_divergence_steps(study, tmp_path, monkeypatch):
    doc = tmp_path / "rpe.md"
    monkeypatch.setattr(rpe_study, "FIGURE", tmp_path / "rpe_study.png")
    doc.write_text("# RPE\n\nhand-written text\n")
    name = rpe_study.study_name("sgd", 0.5)
    runs = rpe_study.report(study, [0, 1], ["--epochs", "3"], rpe_study.DIVERGE_KEYS, 10.0, 0, name, 0.5, doc)
    assert len(runs) == 10 and all(run.last_step == STEPS - 1 for run in runs)
    with Image.open(tmp_path / f"{name}.png") as image:
        assert image.format == "PNG"
        assert image.size == (rpe_study.FIGSIZE[0] * rpe_study.DPI, rpe_study.FIGSIZE[1] * rpe_study.DPI)
    text = doc.read_text()
    assert text.startswith("# RPE\n\nhand-written text\n")  # the section is added, the rest kept
    assert f"<!-- {name}:start -->" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "| variant |" not in line]
    for label in (v.label for v in rpe_study.variants()):
        for seed in (0, 1):
            (row,) = [r for r in rows if r.startswith(f"| {label} | {seed} |")]
            assert row.split("|")[3].strip() == f"{40.0 + seed:.2f}"  # mAP
        (mean,) = [r for r in rows if r.startswith(f"| **{label}** | mean |")]
        assert [c.strip() for c in mean.split("|")[3:6]] == ["40.50", "50.50", "10.50"]  # mAP R1 mINP
    naive = {
        seed: next(r for r in rows if r.startswith(f"| +bias+triplet naive (reported) | {seed} |"))
        for seed in (0, 1)
    }
    assert naive[0].split("|")[9].strip() == "7"  # d_an x100 from step 7
    assert naive[0].split("|")[10].strip() == "100x d_an"
    assert naive[1].split("|")[9].strip() == "12"  # train loss NaN from step 12
    (soft_seed0,) = [r for r in rows if r.startswith("| +bias+triplet soft (default) | 0 |")]
    assert (
        soft_seed0.split("|")[9].strip() == "-" and soft_seed0.split("|")[10].strip() == "1x pos_embed_norm"
    )
    (soft_mean,) = [r for r in rows if r.startswith("| **+bias+triplet soft (default)** | mean |")]
    assert soft_mean.split("|")[6].strip() == "0.75" and soft_mean.split("|")[9].strip() == "0 of 2"  # AUC
    assert "python benchmarks/rpe_study.py --epochs 3" in text


def test_divergence_rule_reference_and_no_divergence():
    series = {
        "train/loss": ([0, 1, 2, 3], [1.0, 1.0, 1.0, 1.0]),
        "k": ([0, 1, 2, 3], [1.0, 2.0, 3.0, 9.0]),
    }
    assert rpe_study.divergence_step(series, "k", 10.0, 0) is None
    assert rpe_study.divergence_step(series, "k", 2.5, 0) == 2
    assert rpe_study.divergence_step(series, "k", 2.5, 1) == 3  # relative to the value at step 1 (2.0)
    series["train/loss"][1][1] = math.inf
    assert rpe_study.divergence_step(series, "k", 10.0, 0) == 1
    series["train/loss"][1][1] = 1.0
    series["j"] = ([0, 1, 2, 3], [1.0, 1.0, 5.0, 1.0])
    assert rpe_study.divergence_step(series, ["k", "j"], 2.5, 0) == 2  # the first of either
    assert rpe_study.peak_growth(series, ["k", "j"], 0) == (9.0, "k")


@pytest.mark.parametrize("variant", rpe_study.variants(weight=5.0), ids=lambda v: v.name)
def test_variant_overrides_compose(variant, tmp_path):
    shared = rpe_study.common_overrides(seed=1, epochs=3)
    overrides = [*variant.overrides, *(o for o in shared if not o.startswith("hydra."))]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=overrides)
    assert (cfg.seed, cfg.trainer.max_epochs, cfg.trainer.log_every_n_steps) == (1, 3, 1)
    assert cfg.model.backbone.stem == "ics" and cfg.model.backbone.stride == 8  # the demo's recipe
    assert cfg.model.optimizer.lr == pytest.approx(1e-3) and cfg.data.batch_size == 32
    has_bias = variant.name != "baseline"
    assert (cfg.model.backbone.rel_pos_bias is not None) == has_bias
    term = cfg.model.loss.get("rpe_triplet")
    if variant.name in ("baseline", "bias"):
        assert term is None
        return
    built = instantiate(term)
    assert (built.form, built.warmup_steps, built.weight) == (variant.name, 0, 5.0)  # one weight, no ramp
    if variant.name == "naive":  # the reported form: raw relations, soft margin
        assert built.normalize is False and built.margin is None


@pytest.mark.parametrize("variant", rpe_study.variants(weight=50.0), ids=lambda v: v.name)
def test_sgd_overrides_give_every_variant_the_transreid_optimiser(variant):
    """``--optimizer sgd``: the TransReID-SSL optimiser (conf/model/vit_baseline.yaml: SGD, momentum 0.9,
    weight decay 1e-4 on every parameter, the position tables included, bias lr x2) on top of each
    variant, the rest of the variant unchanged."""
    (job,) = rpe_study.jobs([variant], [0], 3, Path("out"), rpe_study.optimizer_overrides("sgd", 0.05))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=list(job.overrides))
    optimizer = cfg.model.optimizer
    assert optimizer._target_ == "torch.optim.SGD"
    assert (optimizer.lr, optimizer.momentum, optimizer.weight_decay) == (0.05, 0.9, 1e-4)
    groups = cfg.model.param_groups
    assert (groups.bias_lr_factor, groups.exempt_norm_and_tokens) == (2.0, False)
    assert (cfg.model.backbone.rel_pos_bias is not None) == (variant.name != "baseline")
    built = instantiate(cfg.model.optimizer)([torch.zeros(1, requires_grad=True)])
    assert isinstance(built, torch.optim.SGD) and built.defaults["momentum"] == 0.9


def test_adamw_adds_nothing_and_each_study_has_its_own_name():
    assert rpe_study.optimizer_overrides("adamw") == []
    assert rpe_study.study_name("sgd", 0.5) == "rpe_study_sgd_w0.5"
    assert rpe_study.study_name("adamw", 50.0) == "rpe_study_adamw_w50"
    assert rpe_study.figure_for("rpe_study_sgd_w50") == rpe_study.FIGURE.with_name("rpe_study_sgd_w50.png")
    assert "model.optimizer.lr=0.05" in rpe_study.optimizer_overrides("sgd")  # SGD_LR by default
    with pytest.raises(ValueError, match=r"--optimizer: expected one of \['adamw', 'sgd'\], got 'adam'"):
        rpe_study.optimizer_overrides("adam")
    with pytest.raises(ValueError, match=r"--lr applies to --optimizer sgd only"):
        rpe_study.optimizer_overrides("adamw", 0.1)
    with pytest.raises(ValueError, match=r"--lr: expected a learning rate > 0, got -0.1"):
        rpe_study.optimizer_overrides("sgd", -0.1)
