"""The relative-position study on CPU: baseline, +bias, +bias+RPE-triplet naive and stable, same budget.

Trains each variant with the demo's recipe (tiny ViT + ICS stem stride 8 on the synthetic people,
AdamW 1e-3) for every seed, as subprocesses of ``python -m reid.run``, ``--jobs`` at a time with the
CPU threads split between them; every run logs every step (CSV logger) and ends with a test
evaluation. Then it reads each run's ``csv/metrics.csv`` and ``results.json`` and writes

* ``docs/rpe_study.png``: the RPE loss, d_ap, d_an, the relation / position-embedding / bias-table
  norms and the total train loss over steps, every variant where the quantity exists, every seed;
* the ``rpe_study`` section of ``docs/rpe.md``: the final test mAP / R1 / mINP per variant and seed
  (and their mean), the step where each naive run diverges (:func:`divergence_step`) and how far the
  stable runs went past it, and the command.

    python benchmarks/rpe_study.py [--epochs E] [--seeds 0 1] [--jobs 2] [--reuse-data data]
    python benchmarks/rpe_study.py --optimizer sgd --lr 0.05 ...   # the TransReID optimiser instead

``--optimizer sgd`` trains every variant with the TransReID-SSL recipe's optimiser (SGD, momentum 0.9,
weight decay 1e-4 on every parameter including the position tables, bias lr x2: ``vit_baseline.yaml``)
at ``--lr`` instead of the demo's AdamW, and writes ``docs/rpe_study_sgd.png`` and the
``rpe_study_sgd`` section instead, so the AdamW study's figure and section stay.

Runs live in ``--out`` (``outputs/rpe_study/<variant>/seed<k>``). Finished runs (a ``results.json`` in
their folder) are read, not retrained, unless ``--rerun``; an unfinished one is restarted from scratch;
``--report-only`` only reads and writes the figure and the section.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_section import write_section
from omegaconf import OmegaConf
from study_runs import ROOT, Job, Series, read_metrics, run_dir, train_all

from reid.config import CONFIG_DIR
from reid.results import first_target

DOC = ROOT / "docs" / "rpe.md"
FIGURE = ROOT / "docs" / "rpe_study.png"
SECTION = "rpe_study"
OPTIMIZERS = ("adamw", "sgd")
SGD_LR = 0.05  # from scratch the recipe's 0.0004 (0.008 for TransReID) barely moves the demo
RPE = "train/rpe_triplet"
FIGSIZE = (15.0, 11.0)  # inches
DPI = 100  # -> a 1500 x 1100 PNG


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    overrides: tuple[str, ...]


def variants(naive_weight: float | None = None) -> tuple[Variant, ...]:
    """The four variants; ``naive_weight`` sets the naive form's weight (default: the stable one's)."""
    naive = ["experiment=rpe_triplet_demo", "model.loss.rpe_triplet.form=naive"]
    naive += ["model.loss.rpe_triplet.warmup_steps=0"]  # the form's default (0) over the demo's 90
    if naive_weight is not None:
        naive.append(f"model.loss.rpe_triplet.weight={naive_weight}")
    return (
        Variant("baseline", "baseline (demo)", ("experiment=demo",)),
        Variant("bias", "+bias (rpe_demo)", ("experiment=rpe_demo",)),
        Variant(
            "naive",
            "+bias+triplet naive" + (f" (weight {naive_weight:g})" if naive_weight else ""),
            tuple(naive),
        ),
        Variant("stable", "+bias+triplet stable (rpe_triplet_demo)", ("experiment=rpe_triplet_demo",)),
    )


TRAIN_ORDER = ("naive", "stable", "bias", "baseline")
COLOURS = {"baseline": "tab:gray", "bias": "tab:blue", "naive": "tab:red", "stable": "tab:green"}
STYLES = ("-", "--", ":", "-.")
PANELS = (  # (metrics.csv column, title, log scale)
    ("train/loss_rpe_triplet", "RPE-triplet loss (unweighted)", False),
    (f"{RPE}/d_ap", "d_ap (hardest positive)", True),
    (f"{RPE}/d_an", "d_an (hardest negative)", True),
    (f"{RPE}/relation_norm", "relation norm ||r_i|| (raw)", True),
    (f"{RPE}/pos_embed_norm", "position embedding row norm", True),
    (f"{RPE}/rel_bias_norm", "bias table RMS (gathered entries)", True),
    ("train/loss", "total train loss", False),
    (f"{RPE}/gap", "gap d_an - d_ap (< 0: growing the tables raises the loss)", False),
    (f"{RPE}/weight", "RPE-triplet weight in the total", False),
)


DEMO_EPOCHS = int(OmegaConf.load(CONFIG_DIR / "experiment" / "demo.yaml").trainer.max_epochs)


def common_overrides(seed: int, epochs: int) -> list[str]:
    """What every run of the study shares besides its variant's overrides."""
    return [
        f"seed={seed}",
        f"trainer.max_epochs={epochs}",
        "trainer.log_every_n_steps=1",
        "evaluate_before_fit=false",  # the final test evaluation only
        "data.num_workers=0",  # load in the run's own thread: two jobs share two cores
        "callbacks.progress_bar=null",
    ]


def optimizer_overrides(optimizer: str, lr: float | None = None) -> list[str]:
    """Overrides every variant gets for ``optimizer``: none for ``"adamw"`` (the demo's own), the
    TransReID optimiser (``conf/model/vit_baseline.yaml``: SGD, momentum 0.9, weight decay 1e-4 on every
    parameter, bias lr x2) at ``lr`` (default :data:`SGD_LR`) for ``"sgd"``."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer: expected one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if optimizer == "adamw":
        if lr is not None:
            raise ValueError("--lr applies to --optimizer sgd only (the AdamW study keeps the demo's 1e-3)")
        return []
    lr = SGD_LR if lr is None else lr
    if not lr > 0:
        raise ValueError(f"--lr: expected a learning rate > 0, got {lr!r}")
    return [
        "model.optimizer._target_=torch.optim.SGD",
        f"model.optimizer.lr={lr:g}",
        "+model.optimizer.momentum=0.9",
        "model.optimizer.weight_decay=1e-4",
        "model.param_groups.bias_lr_factor=2.0",
        "model.param_groups.exempt_norm_and_tokens=false",  # the official code decays the tables too
    ]


def outputs_for(optimizer: str) -> tuple[str, Path]:
    """The doc section and figure a study with ``optimizer`` writes."""
    if optimizer == "adamw":
        return SECTION, FIGURE
    return f"{SECTION}_{optimizer}", FIGURE.with_name(f"{FIGURE.stem}_{optimizer}{FIGURE.suffix}")


def jobs(
    chosen: Sequence[Variant],
    seeds: Sequence[int],
    epochs: int,
    out: Path,
    shared: Sequence[str] = (),
) -> list[Job]:
    """The study's runs of ``chosen`` variants, in that order, every seed; ``shared`` (e.g.
    :func:`optimizer_overrides`) goes to every run after its variant's overrides."""
    return [
        Job(
            v.name,
            seed,
            run_dir(out, v.name, seed),
            (*v.overrides, *shared, *common_overrides(seed, epochs)),
        )
        for v in chosen
        for seed in seeds
    ]


@dataclass
class Run:
    variant: str
    seed: int
    series: Series
    test: dict[str, float]

    @property
    def last_step(self) -> int:
        steps = self.series.get("train/loss", ([], []))[0]
        return max(steps) if steps else -1


def read_runs(out: Path, names: Sequence[str], seeds: Sequence[int]) -> list[Run]:
    """The runs of ``out`` that have a ``csv/metrics.csv`` (``test`` empty without ``results.json``)."""
    runs = []
    for name in names:
        for seed in seeds:
            folder = run_dir(out, name, seed)
            metrics = folder / "csv" / "metrics.csv"
            if not metrics.exists():
                continue
            results = folder / "results.json"
            test = first_target(json.loads(results.read_text()).get("test")) if results.exists() else {}
            runs.append(Run(name, seed, read_metrics(metrics), test))
    return runs


# ---------------------------------------------------------------- divergence


def divergence_step(series: Series, key: str, factor: float, reference_step: int) -> int | None:
    """The first step at which ``key`` exceeds ``factor`` x its value at ``reference_step`` (the first
    logged step at or after it), or at which the total train loss is not finite; None if neither."""
    steps, values = series.get(key, ([], []))
    bad = [s for s, v in zip(*series.get("train/loss", ([], []))) if not math.isfinite(v)]
    first_bad = min(bad) if bad else None
    after = [v for s, v in zip(steps, values) if s >= reference_step]
    if not after:
        return first_bad
    limit = factor * abs(after[0])
    crossed = [s for s, v in zip(steps, values) if s > reference_step and (not math.isfinite(v) or v > limit)]
    found = [s for s in (min(crossed) if crossed else None, first_bad) if s is not None]
    return min(found) if found else None


# ---------------------------------------------------------------- figure and table


def plot(runs: Sequence[Run], labels: Mapping[str, str], path: Path, smooth: int = 1) -> None:
    """The study's panels (:data:`PANELS`) for ``runs``, one line per run (colour: variant, style: seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=FIGSIZE, dpi=DPI)
    seeds = sorted({run.seed for run in runs})
    for ax, (key, title, log_scale) in zip(axes.flat, PANELS):
        for run in runs:
            steps, values = run.series.get(key, ([], []))
            if not steps:
                continue
            values = _moving_average(values, smooth)
            style = STYLES[seeds.index(run.seed) % len(STYLES)]
            ax.plot(
                steps,
                values,
                style,
                color=COLOURS.get(run.variant, "k"),
                lw=1.0,
                label=f"{labels.get(run.variant, run.variant)} s{run.seed}",
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if log_scale and ax.lines and all(min(line.get_ydata()) > 0 for line in ax.lines):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, names = [], []
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if name not in names:
                handles.append(handle)
                names.append(name)
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _moving_average(values: Sequence[float], width: int) -> list[float]:
    if width <= 1:
        return list(values)
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


METRICS = ("mAP", "R1", "mINP")


def table(runs: Sequence[Run], labels: Mapping[str, str]) -> str:
    """Markdown: one row per run (variant, seed, final test metrics, last step), then each variant's mean."""
    lines = [
        "| variant | seed | " + " | ".join(METRICS) + " | steps |",
        "|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    by_variant: dict[str, list[Run]] = {}
    for run in runs:
        by_variant.setdefault(run.variant, []).append(run)
        cells = [_cell(run.test.get(k)) for k in METRICS]
        lines.append(
            f"| {labels.get(run.variant, run.variant)} | {run.seed} | "
            + " | ".join(cells)
            + f" | {run.last_step + 1} |"
        )
    for name, group in by_variant.items():
        cells = []
        for key in METRICS:
            found = [run.test[key] for run in group if key in run.test]
            cells.append(_cell(sum(found) / len(found) if found else None))
        lines.append(f"| **{labels.get(name, name)}** | mean | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


def divergence_report(runs: Sequence[Run], key: str, factor: float, reference_step: int) -> str:
    """Where each naive run diverges (:func:`divergence_step`) and how far each stable run went
    without diverging, as a multiple of the naive runs' earliest divergence step."""
    naive = {
        run.seed: divergence_step(run.series, key, factor, reference_step)
        for run in runs
        if run.variant == "naive"
    }
    stable = {
        run.seed: (divergence_step(run.series, key, factor, reference_step), run.last_step)
        for run in runs
        if run.variant == "stable"
    }
    rule = (
        f"first step > {reference_step} where `{key}` exceeds {factor:g} x its value at step "
        f"{reference_step}, or the train loss is not finite"
    )
    lines = [f"Divergence rule: {rule}.", ""]
    for seed, step in sorted(naive.items()):
        lines.append(
            f"- naive, seed {seed}: "
            + (f"diverges at step {step}" if step is not None else "does not diverge")
        )
    found = [step for step in naive.values() if step is not None]
    first = min(found) if found else None
    for seed, (step, last) in sorted(stable.items()):
        ran = f"ran {last + 1} steps"
        ratio = f" = {(last + 1) / first:.1f} x the naive divergence step {first}" if first else ""
        state = f"diverges at step {step}" if step is not None else "does not diverge"
        lines.append(f"- stable, seed {seed}: {state}; {ran}{ratio}")
    return "\n".join(lines)


def report(
    out: Path,
    seeds: Sequence[int],
    argv: Sequence[str],
    key: str,
    factor: float,
    reference_step: int,
    doc: Path = DOC,
    figure: Path = FIGURE,
    naive_weight: float | None = None,
    smooth: int = 1,
    shared: Sequence[str] = (),
    section: str = SECTION,
) -> list[Run]:
    """Read the runs under ``out``, write the figure and the doc ``section`` (``shared``: the overrides
    every run had besides its variant's and :func:`common_overrides`); returns the runs read."""
    found = variants(naive_weight)
    labels = {v.name: v.label for v in found}
    runs = read_runs(out, [v.name for v in found], seeds)
    if not runs:
        raise SystemExit(f"no runs under {out} (expected {out}/<variant>/seed<k>/csv/metrics.csv)")
    plot(runs, labels, figure, smooth)
    every = " ".join([*shared, *common_overrides(0, 0), "hydra.run.dir=<out>/<variant>/seed<k>"])
    every = every.replace("seed=0", "seed=<k>").replace("max_epochs=0", "max_epochs=<epochs>")
    overrides = "\n".join(f"- {v.name}: `{' '.join(v.overrides)}`" for v in found)
    body = "\n\n".join(
        [
            f"Command: `python benchmarks/{Path(__file__).name} {' '.join(argv)}`".rstrip(),
            f"Per-run overrides (besides `{every}`):\n{overrides}",
            table(runs, labels),
            divergence_report(runs, key, factor, reference_step),
            f"Figure: `{figure.relative_to(ROOT) if figure.is_relative_to(ROOT) else figure}`.",
        ]
    )
    write_section(section, body, doc)
    return runs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=DEMO_EPOCHS,
        help=f"epochs of 45 steps per run, the same for every variant (default {DEMO_EPOCHS}: the demo's)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs at a time; the CPU threads are split between them"
    )
    parser.add_argument(
        "--reuse-data",
        type=Path,
        default=None,
        help="data root holding synthetic/ (REID_DATA), shared by every run",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "rpe_study")
    parser.add_argument(
        "--naive-weight",
        type=float,
        default=None,
        help="the naive form's weight (default: rpe_triplet_demo's)",
    )
    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="adamw",
        help="adamw: the demo's; sgd: TransReID's SGD for every variant (writes the rpe_study_sgd outputs)",
    )
    parser.add_argument("--lr", type=float, default=None, help=f"SGD's base lr (default {SGD_LR:g})")
    parser.add_argument("--variants", nargs="+", default=None, help="train only these (default: all four)")
    parser.add_argument("--rerun", action="store_true", help="retrain runs that already have results.json")
    parser.add_argument(
        "--report-only", action="store_true", help="read the runs, write figure and doc, train nothing"
    )
    parser.add_argument(
        "--diverge-key", default=f"{RPE}/relation_norm", help="metrics.csv column of the divergence rule"
    )
    parser.add_argument("--diverge-factor", type=float, default=10.0)
    parser.add_argument("--diverge-reference-step", type=int, default=0)
    parser.add_argument("--smooth", type=int, default=1, help="moving-average width of the plotted curves")
    args = parser.parse_args(argv)
    try:
        shared = optimizer_overrides(args.optimizer, args.lr)
    except ValueError as err:
        parser.error(str(err))
    section, figure = outputs_for(args.optimizer)
    argv = [
        a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"
    ]  # the training command
    if not args.report_only:
        chosen = [v for v in variants(args.naive_weight) if args.variants is None or v.name in args.variants]
        chosen.sort(key=lambda v: TRAIN_ORDER.index(v.name))  # the runs the divergence needs first
        planned = jobs(chosen, args.seeds, args.epochs, args.out, shared)
        todo = [job for job in planned if args.rerun or not (job.folder / "results.json").exists()]
        threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
        train_all(todo, args.jobs, threads, args.reuse_data)
    runs = report(
        args.out,
        args.seeds,
        argv,
        args.diverge_key,
        args.diverge_factor,
        args.diverge_reference_step,
        figure=figure,
        naive_weight=args.naive_weight,
        smooth=args.smooth,
        shared=shared,
        section=section,
    )
    print(f"{len(runs)} runs read; wrote {figure} and the {section} section of {DOC}")


if __name__ == "__main__":
    main()
