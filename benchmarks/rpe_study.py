"""The relative-position study on CPU: a fair comparison of the RPE-triplet forms, and what they learn.

Five variants with the demo's model (tiny ViT + ICS stem stride 8 on the synthetic people): the baseline
(``experiment=demo``), the relative position bias alone (``rpe_demo``), and the bias with the RPE-triplet
term in its three forms: ``naive`` (the users' reported form), ``stable`` (the first fix) and ``soft``
(the default). Every triplet variant has the same weight (``--weight``) and no ramp (the naive form has
none), and every variant the same optimiser and schedule: the users' shape by default, SGD (momentum 0.9,
weight decay 1e-4 on every parameter, bias lr x2, as ``rpe_triplet_market``) with a linear warm-up then a
cosine over the run, at a base lr scaled to the CPU model (``--lr``). Each (variant, seed) is a
``python -m reid.run`` subprocess, ``--jobs`` at a time; every run logs every step and ends with a test on
the held-out test identities. Then it reads each run's ``csv/metrics.csv`` and ``results.json`` and writes

* ``docs/<name>.png``: the RPE loss, d_ap, d_an, the relation / table norms, the train AUC and the
  collapse over steps, every variant where the quantity exists, every seed;
* the ``<name>`` section of ``docs/rpe.md``: per variant and seed the test mAP / R1 / mINP, the identity
  AUC and the collapse of the relation vectors of the test queries (``reid.callbacks.rpe_monitor``), the
  step where a run diverges (:func:`divergence_step`), and each variant's mean; and the command.

    python benchmarks/rpe_study.py [--epochs E] [--seeds 0 1 2] [--weight 0.5] [--jobs 2] [--reuse-data data]
    python benchmarks/rpe_study.py --weight 50 --variants naive soft      # at the users' divergence weight
    python benchmarks/rpe_study.py --optimizer adamw ...                  # the demo's AdamW instead

``<name>`` is ``rpe_study_<optimizer>_w<weight>``. Runs live in ``--out/<name>/<variant>/seed<k>``;
finished runs (a ``results.json``) are read, not retrained, unless ``--rerun``; ``--report-only`` only
reads and writes.
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

from reid.callbacks.rpe_divergence import QUANTITIES
from reid.config import CONFIG_DIR
from reid.results import first_target

DOC = ROOT / "docs" / "rpe.md"
FIGURE = ROOT / "docs" / "rpe_study.png"
SECTION = "rpe_study"
OPTIMIZERS = ("adamw", "sgd")
SGD_LR = 0.05  # from scratch the recipe's 0.0004 (0.008 for TransReID) barely moves the demo
RPE = "train/rpe_triplet"
DIVERGE_KEYS = tuple(f"{RPE}/{quantity}" for quantity in QUANTITIES)
"""The columns of the divergence rule: those ``callbacks.rpe_divergence`` watches in the run."""
FIGSIZE = (15.0, 11.0)  # inches
DPI = 100  # -> a 1500 x 1100 PNG


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    overrides: tuple[str, ...]


FORMS = ("naive", "stable", "soft")


def variants(weight: float = 0.5) -> tuple[Variant, ...]:
    """The five variants; every triplet form at ``weight`` with no ramp (the fair comparison)."""
    key = "model.loss.rpe_triplet"

    def form(name: str, label: str) -> Variant:
        return Variant(
            name,
            f"+bias+triplet {label}",
            (
                "experiment=rpe_triplet_demo",
                f"{key}.form={name}",
                f"{key}.weight={weight:g}",
                f"{key}.warmup_steps=0",
            ),
        )

    return (
        Variant("baseline", "baseline (demo)", ("experiment=demo",)),
        Variant("bias", "+bias (rpe_demo)", ("experiment=rpe_demo",)),
        form("naive", "naive (reported)"),
        form("stable", "stable (the first fix)"),
        form("soft", "soft (default)"),
    )


TRAIN_ORDER = ("naive", "soft", "stable", "bias", "baseline")
COLOURS = {
    "baseline": "tab:gray",
    "bias": "tab:blue",
    "naive": "tab:red",
    "stable": "tab:orange",
    "soft": "tab:green",
}
STYLES = ("-", "--", ":", "-.")
PANELS = (  # (metrics.csv column, title, log scale)
    ("train/loss_rpe_triplet", "RPE-triplet loss (unweighted)", False),
    (f"{RPE}/d_ap", "d_ap (hardest positive)", True),
    (f"{RPE}/d_an", "d_an (hardest negative)", True),
    (f"{RPE}/relation_norm", "relation norm ||r_i|| (raw)", True),
    (f"{RPE}/pos_embed_norm", "position embedding row norm", True),
    (f"{RPE}/rel_bias_norm", "bias table RMS (entries used)", True),
    (f"{RPE}/auc", "same-identity AUC of the batch's relations (0.5: none)", False),
    (f"{RPE}/collapse", "mean cross-image cosine of the compared relations", False),
    (f"{RPE}/raw_collapse", "mean cross-image cosine of the raw relations", False),
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


def study_name(optimizer: str, weight: float) -> str:
    """``rpe_study_<optimizer>_w<weight>``: the doc section, the figure's and the runs' folder name."""
    return f"{SECTION}_{optimizer}_w{weight:g}"


def figure_for(name: str) -> Path:
    return FIGURE.with_name(f"{name}.png")


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


def _after(series: Series, key: str, reference_step: int) -> list[tuple[int, float]]:
    steps, values = series.get(key, ([], []))
    return [(s, v) for s, v in zip(steps, values) if s >= reference_step]


def divergence_step(
    series: Series, keys: str | Sequence[str], factor: float, reference_step: int
) -> int | None:
    """The first step at which one of ``keys`` exceeds ``factor`` x its value at ``reference_step`` (the
    first logged step at or after it), or at which the total train loss is not finite; None if neither."""
    bad = [s for s, v in zip(*series.get("train/loss", ([], []))) if not math.isfinite(v)]
    found = [min(bad)] if bad else []
    for key in [keys] if isinstance(keys, str) else keys:
        after = _after(series, key, reference_step)
        if not after:
            continue
        limit = factor * abs(after[0][1])
        crossed = [s for s, v in after[1:] if not math.isfinite(v) or v > limit]
        found += crossed[:1]
    return min(found) if found else None


def peak_growth(series: Series, keys: Sequence[str], reference_step: int) -> tuple[float, str] | None:
    """The largest ``max(value) / value at reference_step`` over ``keys``, with the key's last name part."""
    growths = []
    for key in keys:
        values = [v for _, v in _after(series, key, reference_step)]
        if values and values[0] > 0:
            growths.append((max(values) / values[0], key.rsplit("/", 1)[-1]))
    return max(growths) if growths else None


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


METRICS = ("mAP", "R1", "mINP", "rpe/auc", "rpe/collapse", "rpe/raw_collapse")
HEADERS = ("mAP", "R1", "mINP", "AUC", "collapse", "raw collapse")


def _growth_cell(found: tuple[float, str] | None) -> str:
    if found is None:
        return "-"
    value, key = found
    return f"{value:.3g}x {key}" if value < 1e4 else f"{value:.1e}x {key}"


def table(
    runs: Sequence[Run],
    labels: Mapping[str, str],
    diverged: Mapping[tuple[str, int], int | None],
    growth: Mapping[tuple[str, int], tuple[float, str] | None] | None = None,
) -> str:
    """Markdown: one row per run (variant, seed, final test metrics, the identity AUC and collapse of the
    test queries' relation vectors, the divergence step, the peak growth of the watched quantities, steps
    run), then each variant's mean."""
    growth = growth or {}
    lines = [
        "| variant | seed | " + " | ".join(HEADERS) + " | diverges at | peak growth | steps |",
        "|---|---|" + "---|" * (len(METRICS) + 3),
    ]
    by_variant: dict[str, list[Run]] = {}
    for run in runs:
        by_variant.setdefault(run.variant, []).append(run)
        cells = [_cell(run.test.get(k)) for k in METRICS]
        step = diverged.get((run.variant, run.seed))
        lines.append(
            f"| {labels.get(run.variant, run.variant)} | {run.seed} | " + " | ".join(cells)
            + f" | {'-' if step is None else step} | {_growth_cell(growth.get((run.variant, run.seed)))}"
            + f" | {run.last_step + 1} |"
        )  # fmt: skip
    for name, group in by_variant.items():
        cells = []
        for key in METRICS:
            found = [run.test[key] for run in group if key in run.test]
            cells.append(_cell(sum(found) / len(found) if found else None))
        count = sum(diverged.get((name, run.seed)) is not None for run in group)
        lines.append(
            f"| **{labels.get(name, name)}** | mean | "
            + " | ".join(cells)
            + f" | {count} of {len(group)} | | |"
        )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


def divergence_steps(
    runs: Sequence[Run], keys: Sequence[str], factor: float, reference_step: int
) -> dict[tuple[str, int], int | None]:
    """(variant, seed) -> the step a triplet run diverges at (:func:`divergence_step`), or None."""
    return {
        (run.variant, run.seed): divergence_step(run.series, keys, factor, reference_step)
        for run in runs
        if run.variant in FORMS
    }


def divergence_rule(keys: Sequence[str], factor: float, reference_step: int) -> str:
    names = " or ".join(f"`{key}`" for key in keys)
    return (
        f"Divergence: the first step > {reference_step} where {names} exceeds {factor:g} x its value at step "
        f"{reference_step}, or the train loss is not finite (the rule of the run's "
        "`callbacks.rpe_divergence`; the relation and bias norms are not watched: the bias table starts at "
        "zero, so learning it multiplies them). Peak growth: the largest max / start of those quantities "
        "over the run."
    )


def report(
    out: Path,
    seeds: Sequence[int],
    argv: Sequence[str],
    keys: Sequence[str],
    factor: float,
    reference_step: int,
    name: str,
    weight: float,
    doc: Path = DOC,
    smooth: int = 1,
    shared: Sequence[str] = (),
) -> list[Run]:
    """Read the runs under ``out``, write the figure and the doc section ``name`` (``shared``: the overrides
    every run had besides its variant's and :func:`common_overrides`); returns the runs read."""
    found = variants(weight)
    labels = {v.name: v.label for v in found}
    runs = read_runs(out, [v.name for v in found], seeds)
    if not runs:
        raise SystemExit(f"no runs under {out} (expected {out}/<variant>/seed<k>/csv/metrics.csv)")
    figure = figure_for(name)
    plot(runs, labels, figure, smooth)
    every = " ".join([*shared, *common_overrides(0, 0), "hydra.run.dir=<out>/<variant>/seed<k>"])
    every = every.replace("seed=0", "seed=<k>").replace("max_epochs=0", "max_epochs=<epochs>")
    overrides = "\n".join(f"- {v.name}: `{' '.join(v.overrides)}`" for v in found)
    body = "\n\n".join(
        [
            f"Command: `python benchmarks/{Path(__file__).name} {' '.join(argv)}`".rstrip(),
            f"Per-run overrides (besides `{every}`):\n{overrides}",
            table(
                runs,
                labels,
                divergence_steps(runs, keys, factor, reference_step),
                {
                    (r.variant, r.seed): peak_growth(r.series, keys, reference_step)
                    for r in runs
                    if r.variant in FORMS
                },
            ),
            divergence_rule(keys, factor, reference_step),
            f"Figure: `{figure.relative_to(ROOT) if figure.is_relative_to(ROOT) else figure}`.",
        ]
    )
    write_section(name, body, doc)
    return runs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=DEMO_EPOCHS,
        help=f"epochs of about 45 steps per run, the same for every variant (default {DEMO_EPOCHS})",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs at a time; the CPU threads are split between them"
    )
    parser.add_argument(
        "--reuse-data", type=Path, default=None, help="data root holding synthetic/ (REID_DATA)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "rpe_study")
    parser.add_argument("--weight", type=float, default=0.5, help="every triplet form's weight (no ramp)")
    parser.add_argument(
        "--optimizer", choices=OPTIMIZERS, default="sgd",
        help="sgd: the users' shape (SGD, warm-up then cosine; default); adamw: the demo's",
    )  # fmt: skip
    parser.add_argument("--lr", type=float, default=None, help=f"SGD's base lr (default {SGD_LR:g})")
    parser.add_argument("--variants", nargs="+", default=None, help="train only these (default: all five)")
    parser.add_argument("--rerun", action="store_true", help="retrain runs that already have results.json")
    parser.add_argument(
        "--report-only", action="store_true", help="read the runs, write figure and doc, train nothing"
    )
    parser.add_argument(
        "--diverge-key",
        nargs="+",
        default=list(DIVERGE_KEYS),
        help="metrics.csv columns of the divergence rule (default: those the run's callback watches)",
    )
    parser.add_argument("--diverge-factor", type=float, default=10.0)
    parser.add_argument("--diverge-reference-step", type=int, default=0)
    parser.add_argument("--smooth", type=int, default=1, help="moving-average width of the plotted curves")
    args = parser.parse_args(argv)
    try:
        shared = optimizer_overrides(args.optimizer, args.lr)
    except ValueError as err:
        parser.error(str(err))
    name = study_name(args.optimizer, args.weight)
    out = args.out / name
    argv = [
        a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"
    ]  # the training command
    if not args.report_only:
        chosen = [v for v in variants(args.weight) if args.variants is None or v.name in args.variants]
        chosen.sort(key=lambda v: TRAIN_ORDER.index(v.name))
        planned = jobs(chosen, args.seeds, args.epochs, out, shared)
        todo = [job for job in planned if args.rerun or not (job.folder / "results.json").exists()]
        threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
        train_all(todo, args.jobs, threads, args.reuse_data)
    runs = report(out, args.seeds, argv, args.diverge_key, args.diverge_factor, args.diverge_reference_step,
                  name, args.weight, smooth=args.smooth, shared=shared)  # fmt: skip
    print(f"{len(runs)} runs read; wrote {figure_for(name)} and the {name} section of {DOC}")


if __name__ == "__main__":
    main()
